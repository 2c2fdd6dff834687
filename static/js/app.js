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
    // A status click in an item's row carries the note being written in its open panel
    // (an override needs one), and keeps the panel open in the answer.
    var elt = event.detail.elt;
    var form = elt && elt.closest ? elt.closest(".status-form") : null;
    var row = form && form.closest(".item");
    if (row && row.classList.contains("is-open")) {
      row.querySelectorAll(".item-panel [data-carry]").forEach(function (field) {
        event.detail.parameters[field.name] = field.value;
      });
    }
  });

  // An error htmx will not swap (403, 404, 500, network): say so inside the card.
  function showInlineError(elt, message) {
    var card = elt && elt.closest ? elt.closest(".item") : null;
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

  // ---- a refused form: its first wrong field in view, ready to correct -----------------
  // (Deferred, this runs once the page is parsed; the wrong field wins over an autofocus.)
  var wrong = document.querySelector("main [aria-invalid='true']");
  if (wrong) {
    document.querySelectorAll("[autofocus]").forEach(function (el) { if (el !== wrong) el.removeAttribute("autofocus"); });
    wrong.focus();
  }

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

  // ---- sign-off: choosing "approve with conditions" opens the conditions to fill in -----
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.matches || !select.matches(".signoff-form select[name=decision]")) return;
    var details = select.form.querySelector("details.form-details");
    if (details && select.value === "approve_with_conditions") details.open = true;
  });

  // ---- assessment rows: expand on click or Enter, editors loaded on demand ----------------
  function rowPanel(row) { return row ? row.querySelector(".item-panel") : null; }

  function setExpanded(row, open, then) {
    var panel = rowPanel(row);
    var toggle = row && row.querySelector(".item-toggle");
    if (!panel || !toggle) return;
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    row.classList.toggle("is-open", open);
    panel.hidden = !open;
    if (open && !panel.firstElementChild && window.htmx) {
      var list = row.closest("[data-panel-base]");
      var url = list.getAttribute("data-panel-base") + encodeURIComponent(row.getAttribute("data-key"));
      htmx.ajax("GET", url, { target: panel, swap: "innerHTML" }).then(function () {
        if (then) then(panel);
      });
    } else if (open && then) {
      then(panel);
    }
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest(".item-toggle");
    if (!toggle || !window.htmx || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    var row = toggle.closest(".item");
    setExpanded(row, toggle.getAttribute("aria-expanded") !== "true");
  });

  // ---- assessment keyboard: j/k move, Enter expands, 1-4 set status, e adds evidence ----
  // Single-key shortcuts can be turned off (WCAG 2.1.4); the choice is kept in this browser.
  var STATUS_KEYS = { "1": "met", "2": "partial", "3": "not_met", "4": "n_a" };
  var SHORTCUTS_KEY = "preflight.shortcuts";
  var lastRowId = null;

  function shortcutsOn() {
    try { return window.localStorage.getItem(SHORTCUTS_KEY) !== "off"; } catch (e) { return true; }
  }

  var shortcutsBox = document.getElementById("shortcuts-enabled");
  if (shortcutsBox) {
    shortcutsBox.checked = shortcutsOn();
    shortcutsBox.addEventListener("change", function () {
      try { window.localStorage.setItem(SHORTCUTS_KEY, shortcutsBox.checked ? "on" : "off"); } catch (e) { /* private mode */ }
    });
  }

  function openDialog(id) {
    var dialog = document.getElementById(id);
    if (dialog && !dialog.open && dialog.showModal) dialog.showModal();
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open-dialog]");
    if (opener) openDialog(opener.getAttribute("data-open-dialog"));
  });

  function isTyping(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  function visibleRows() {
    return Array.prototype.filter.call(document.querySelectorAll(".item"), function (row) {
      return row.offsetParent !== null;
    });
  }

  function currentRow() {
    var active = document.activeElement;
    var row = active && active.closest ? active.closest(".item") : null;
    if (row) return row;
    return lastRowId ? document.getElementById(lastRowId) : null;
  }

  function focusRow(row) {
    if (!row) return;
    lastRowId = row.id;
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
    // keep it clear of the sticky score bar
    var bar = document.getElementById("score-bar");
    if (bar) {
      var top = row.getBoundingClientRect().top;
      var limit = bar.getBoundingClientRect().bottom + 8;
      if (top < limit) window.scrollBy(0, top - limit);
    }
  }

  document.addEventListener("focusin", function (event) {
    var row = event.target.closest && event.target.closest(".item");
    if (row) lastRowId = row.id;
  });

  document.addEventListener("keydown", function (event) {
    if (!document.querySelector(".item")) return;
    if (event.key === "Escape" && isTyping(event.target)) {
      var from = event.target.closest(".item");
      if (from) { event.preventDefault(); focusRow(from); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
    if (document.querySelector("dialog[open]")) return;
    var row = currentRow();
    if (event.key === "Enter" && row && event.target === row) {
      event.preventDefault();
      setExpanded(row, !row.classList.contains("is-open"));
      return;
    }
    if (!shortcutsOn()) return;
    var rows = visibleRows();
    if (!rows.length) return;
    var index = row ? rows.indexOf(row) : -1;
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      var next = event.key === "j" ? index + 1 : index - 1;
      if (index === -1) next = 0;
      focusRow(rows[Math.max(0, Math.min(rows.length - 1, next))]);
    } else if (STATUS_KEYS[event.key] && row) {
      var button = row.querySelector('.status-form button[name="status"][value="' + STATUS_KEYS[event.key] + '"]');
      if (button && !button.disabled) {
        event.preventDefault();
        lastRowId = row.id;
        button.click();
      }
    } else if (event.key === "e") {
      var target = row || rows[0];
      event.preventDefault();
      lastRowId = target.id;
      setExpanded(target, true, function (panel) {
        var field = panel.querySelector('.evidence-form input[name="url"]');
        if (field) field.focus();
      });
    } else if (event.key === "?") {
      event.preventDefault();
      openDialog("keyboard-help");
    }
  });

  // After htmx replaces a row, put focus back: on the note when the save was refused (an
  // override needs a note), else on the row, so j/k/1-4 carry on from there.
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.classList && target.classList.contains("item-panel")) return;
    if (!lastRowId) return;
    var row = document.getElementById(lastRowId);
    if (!row) return;
    var refused = row.querySelector(".card-error");
    if (refused) {
      var note = row.querySelector("textarea[name=note]");
      if (note) { note.focus(); return; }
    }
    var active = document.activeElement;
    if (active && active !== document.body && document.contains(active) && row.contains(active)) return;
    if (!active || active === document.body || !document.contains(active)) row.focus({ preventScroll: true });
  });
})();
