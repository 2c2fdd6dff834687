/* Keeps a page that stays open for hours (an assessment, a review meeting) usable: CSRF tokens
   are renewed while the person is signed in, and when a save is refused because the session
   ended, what they typed stays on the page with a way to sign in again. Works beside app.js. */
(function () {
  "use strict";

  var REFRESH_EVERY_MS = 15 * 60 * 1000;   // tokens live an hour (WTF_CSRF_TIME_LIMIT)
  var DRAFT_PREFIX = "preflight-draft:";
  var signedIn = document.querySelector('meta[name="csrf-token"]') &&
                 document.querySelector("form[action$='/logout']");
  var lastRefresh = Date.now();

  function setToken(token) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) meta.setAttribute("content", token);
    document.querySelectorAll('input[name="csrf_token"]').forEach(function (input) {
      input.value = token;
    });
  }

  // Resolves true when the session is still good (tokens renewed), false when it ended.
  function refreshToken() {
    lastRefresh = Date.now();
    return fetch("/session/csrf", {
      credentials: "same-origin",
      headers: { "Accept": "application/json", "HX-Request": "true" },
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok) return false;
      return response.json().then(function (body) {
        if (body && body.token) { setToken(body.token); return true; }
        return false;
      });
    }).catch(function () { return true; });  // offline: say nothing, try again later
  }

  function loginUrl() {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  // A message inside the card whose save was refused (or at the top of the page).
  function notice(elt, stillSignedIn) {
    var card = itemOf(elt);
    var box = document.createElement("div");
    box.className = "flash flash-error card-error js-session";
    box.setAttribute("role", "alert");
    var text = document.createElement("span");
    if (stillSignedIn) {
      text.textContent = "Your form had expired, so this was not saved. It is renewed now: " +
                         "press the button again. What you typed is still here.";
      box.appendChild(text);
    } else {
      text.textContent = "Your session expired, sign in again. What you typed is still here " +
                         "and is saved in this browser; after signing in, press the button again. ";
      var link = document.createElement("a");
      link.href = loginUrl();
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = "Sign in (opens a new tab)";
      box.appendChild(text);
      box.appendChild(link);
    }
    var container = card || document.getElementById("content");
    if (!container) return;
    var old = container.querySelector(".js-session");
    if (old) old.remove();
    if (card) card.appendChild(box); else container.insertBefore(box, container.firstChild);
  }

  // The checklist item (row and its panel) a request came from, or the form itself.
  function itemOf(elt) {
    return elt && elt.closest ? elt.closest(".item, .item-card") : null;
  }

  function scopeOf(elt) {
    var item = itemOf(elt);
    return item || (elt && elt.closest ? elt.closest("form") : null);
  }

  function draftKey(scope) {
    return DRAFT_PREFIX + location.pathname + "#" + (scope.id || scope.getAttribute("action") || "");
  }

  var FIELDS = "textarea[name], input[type=text][name], input[type=url][name]";

  function keepDrafts(scope) {
    if (!scope || !window.localStorage) return;
    var drafts = {};
    scope.querySelectorAll(FIELDS).forEach(function (field) {
      if (field.value) drafts[field.name] = field.value;
    });
    if (!Object.keys(drafts).length) return;
    try { localStorage.setItem(draftKey(scope), JSON.stringify(drafts)); } catch (e) { /* full or off */ }
  }

  function dropDraft(scope) {
    if (scope && window.localStorage) localStorage.removeItem(draftKey(scope));
  }

  // After signing in again (or a reload, or a panel loading), put back what was typed but
  // not saved.
  function restoreDrafts() {
    if (!window.localStorage) return;
    document.querySelectorAll(".item[id], .item-card[id], form[action]").forEach(function (scope) {
      var raw = localStorage.getItem(draftKey(scope));
      if (!raw) return;
      var drafts;
      try { drafts = JSON.parse(raw); } catch (e) { dropDraft(scope); return; }
      var restored = false;
      Object.keys(drafts).forEach(function (name) {
        var field = scope.querySelector('[name="' + name.replace(/"/g, "") + '"]');
        if (field && field.matches(FIELDS) && field.value !== drafts[name]) {
          field.value = drafts[name];
          restored = true;
        }
      });
      if (restored && !scope.querySelector(".js-restored")) {
        var details = scope.querySelector("details.note-edit");
        if (details) details.open = true;
        var box = document.createElement("p");
        box.className = "small muted js-restored";
        box.textContent = "Restored your unsaved text. Press the button to save it.";
        var field = scope.querySelector("textarea[name]");
        (field && field.parentNode ? field.parentNode : scope).appendChild(box);
      }
    });
  }

  function requestScope(detail) {
    return scopeOf(detail.requestConfig ? detail.requestConfig.elt : detail.elt);
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 200 && xhr.status < 300) {
      dropDraft(requestScope(event.detail));  // saved: the copy kept in the browser can go
      return;
    }
    if (!xhr || xhr.getResponseHeader("X-Preflight-Session") !== "expired") return;
    event.detail.shouldSwap = false;   // never replace the card: the person's text is in it
    event.detail.isError = false;      // handled here, not as a generic error
    var scope = requestScope(event.detail);
    keepDrafts(scope);
    refreshToken().then(function (ok) { notice(scope || event.target, ok); });
  });

  if (signedIn) {
    setInterval(refreshToken, REFRESH_EVERY_MS);
    document.addEventListener("visibilitychange", function () {
      // A laptop woken up after a while: renew before the person types anything.
      if (document.visibilityState === "visible" && Date.now() - lastRefresh > 5 * 60 * 1000) {
        refreshToken();
      }
    });
  }
  document.addEventListener("htmx:afterSettle", restoreDrafts);  // a panel loaded on demand
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", restoreDrafts);
  } else {
    restoreDrafts();
  }
})();
