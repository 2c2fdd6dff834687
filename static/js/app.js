/* Preflight's small script: htmx settings, confirmations, copy buttons, table sorting and
   filtering, and the assessment page's keyboard shortcuts. Everything works without it. */
(function () {
  "use strict";

  // ---- htmx ------------------------------------------------------------------------
  if (window.htmx) {
    htmx.config.includeIndicatorStyles = false; // would be an inline <style>, refused by the CSP
    htmx.config.allowEval = false;
    // We never use style attributes; settling them would trip the CSP.
    htmx.config.attributesToSettle = ["class", "width", "height"];
    // htmx 2 does not swap 4xx responses by default; ours carry the card with its error
    // (400) or with the other person's answer (409), so swap those too.
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "40[09]", swap: true, error: false },
      { code: "[45]..", swap: false, error: true },
      { code: "...", swap: false },
    ];
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) event.detail.headers["X-CSRFToken"] = token;
  });

  // An error htmx will not swap (403, 404, 500, network): say so inside the card.
  function showInlineError(elt, message) {
    var card = elt && elt.closest ? elt.closest(".item-card") : null;
    var box = document.createElement("div");
    box.className = "flash flash-error card-error";
    box.setAttribute("role", "alert");
    box.textContent = message;
    if (card) {
      var old = card.querySelector(".js-error");
      if (old) old.remove();
      box.classList.add("js-error");
      card.appendChild(box);
    } else {
      var main = document.getElementById("content");
      if (main) main.insertBefore(box, main.firstChild);
    }
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var text = "";
    try {
      text = new DOMParser().parseFromString(xhr.responseText || "", "text/html").body.textContent.trim();
    } catch (e) { text = ""; }
    showInlineError(event.detail.elt, "Not saved (" + xhr.status + "). " + (text || "Reload the page and try again.").slice(0, 300));
  });

  document.addEventListener("htmx:sendError", function (event) {
    showInlineError(event.detail.elt, "Not saved: the server could not be reached. Check your connection and try again.");
  });

  // ---- confirmations (no onclick= under our CSP) --------------------------------------
  document.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    var message = (submitter && submitter.getAttribute("data-confirm")) ||
                  event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // ---- copy buttons, select-on-focus ------------------------------------------------
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var input = document.querySelector(button.getAttribute("data-copy"));
    if (!input) return;
    input.focus();
    input.select();
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied ✓";
      setTimeout(function () { button.textContent = label; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });
  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) event.target.select();
  });

  // ---- sortable tables: <th data-sort="text|num"><button>…</button></th> ------------
  function cellValue(row, index, kind) {
    var cell = row.children[index];
    if (!cell) return kind === "num" ? -Infinity : "";
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (kind === "num") {
      var n = parseFloat(raw);
      return isNaN(n) ? -Infinity : n;
    }
    return raw.toLowerCase();
  }

  function sortTable(th) {
    var table = th.closest("table");
    var tbody = table.tBodies[0];
    if (!tbody) return;
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var kind = th.getAttribute("data-sort") || "text";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, kind), y = cellValue(b, index, kind);
      if (x < y) return ascending ? -1 : 1;
      if (x > y) return ascending ? 1 : -1;
      return 0;
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("th[data-sort] > button");
    if (button) sortTable(button.parentNode);
  });

  // ---- table filter: <input data-filter-table="#id"> --------------------------------
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("[data-filter-table]")) return;
    var table = document.querySelector(input.getAttribute("data-filter-table"));
    if (!table) return;
    var needle = input.value.trim().toLowerCase();
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var match = !needle || row.textContent.toLowerCase().indexOf(needle) !== -1;
      row.hidden = !match;
      if (match) shown++;
    });
    var counter = document.querySelector(input.getAttribute("data-filter-count") || "#none");
    if (counter) counter.textContent = shown;
  });

  // ---- assessment keyboard: j/k move, 1-4 set status, e adds evidence ------------------
  var STATUS_KEYS = { "1": "met", "2": "partial", "3": "not_met", "4": "n_a" };
  var lastCardId = null;

  function isTyping(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  function visibleCards() {
    return Array.prototype.filter.call(document.querySelectorAll(".item-card"), function (card) {
      return card.offsetParent !== null;
    });
  }

  function currentCard() {
    var active = document.activeElement;
    var card = active && active.closest ? active.closest(".item-card") : null;
    if (card) return card;
    return lastCardId ? document.getElementById(lastCardId) : null;
  }

  function focusCard(card) {
    if (!card) return;
    lastCardId = card.id;
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
    // keep it below the sticky header
    var header = document.getElementById("score-header");
    if (header) {
      var top = card.getBoundingClientRect().top;
      var limit = header.getBoundingClientRect().bottom + 8;
      if (top < limit) window.scrollBy(0, top - limit);
    }
  }

  document.addEventListener("focusin", function (event) {
    var card = event.target.closest && event.target.closest(".item-card");
    if (card) lastCardId = card.id;
  });

  document.addEventListener("keydown", function (event) {
    if (!document.querySelector(".item-card")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
    var cards = visibleCards();
    if (!cards.length) return;
    var card = currentCard();
    var index = card ? cards.indexOf(card) : -1;
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      var next = event.key === "j" ? index + 1 : index - 1;
      if (index === -1) next = 0;
      focusCard(cards[Math.max(0, Math.min(cards.length - 1, next))]);
    } else if (STATUS_KEYS[event.key] && card) {
      var button = card.querySelector('button[name="status"][value="' + STATUS_KEYS[event.key] + '"]');
      if (button && !button.disabled) {
        event.preventDefault();
        button.click();
      }
    } else if (event.key === "e") {
      var target = card || cards[0];
      var field = target.querySelector('.evidence-form input[name="url"]');
      if (field) {
        event.preventDefault();
        lastCardId = target.id;
        field.focus();
      }
    } else if (event.key === "?") {
      var help = document.getElementById("keyboard-help");
      if (help) help.open = !help.open;
    }
  });

  // After htmx replaces a card, put focus back on it so j/k/1-4 carry on from there.
  document.addEventListener("htmx:afterSettle", function () {
    if (!lastCardId) return;
    var active = document.activeElement;
    if (active && active !== document.body && document.contains(active)) return;
    var card = document.getElementById(lastCardId);
    if (card) card.focus({ preventScroll: true });
  });
})();
