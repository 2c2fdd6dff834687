// Launch review meeting mode (templates/meeting/show.html): one slide at a time.
// ← / → (also PageUp / PageDown, Space) move; g shows gaps only; f full screen; Esc leaves.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var body = document.body;
    var all = Array.prototype.slice.call(document.querySelectorAll(".slide"));
    if (!all.length) return;
    var position = document.querySelector("[data-position]");
    var gapsLabel = document.querySelector("[data-gaps-label]");
    var gapsOnly = false;
    var current = 0;

    body.classList.add("slides-on");

    function visible() {
      return all.filter(function (slide) {
        return !gapsOnly || slide.dataset.hasGaps === "true";
      });
    }

    function show(index) {
      var slides = visible();
      current = Math.max(0, Math.min(index, slides.length - 1));
      all.forEach(function (slide) { slide.classList.remove("is-current"); });
      var slide = slides[current];
      slide.classList.add("is-current");
      if (position) position.textContent = "Slide " + (current + 1) + " of " + slides.length;
      if (history.replaceState) history.replaceState(null, "", "#" + slide.id);
      window.scrollTo(0, 0);
    }

    function showSlide(slide) {
      var index = visible().indexOf(slide);
      show(index < 0 ? 0 : index);
    }

    function toggleGaps() {
      var slide = visible()[current];
      gapsOnly = !gapsOnly;
      body.classList.toggle("gaps-only", gapsOnly);
      if (gapsLabel) gapsLabel.textContent = gapsOnly ? "all items" : "gaps only";
      if (gapsOnly && slide.dataset.hasGaps !== "true") {
        // Stay near the discussion: the next slide with gaps, else the last one before it.
        var at = all.indexOf(slide);
        var gaps = visible();
        slide = gaps.filter(function (s) { return all.indexOf(s) > at; })[0] || gaps[gaps.length - 1] || all[0];
      }
      showSlide(slide);
    }

    function typing(target) {
      return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    }

    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === "Escape") {
        if (typing(event.target)) { event.target.blur(); return; }
        if (document.fullscreenElement) return;  // the browser leaves full screen first
        window.location.href = body.dataset.exitUrl;
        return;
      }
      if (typing(event.target)) return;
      // Space presses a focused button or link and opens a focused <summary>, as everywhere.
      if (event.key === " " && event.target.closest && event.target.closest("button, a[href], summary")) return;
      if (event.key === "ArrowRight" || event.key === "PageDown" || event.key === " ") {
        event.preventDefault();
        show(current + 1);
      } else if (event.key === "ArrowLeft" || event.key === "PageUp") {
        event.preventDefault();
        show(current - 1);
      } else if (event.key === "Home") {
        show(0);
      } else if (event.key === "End") {
        show(visible().length - 1);
      } else if (event.key === "g") {
        toggleGaps();
      } else if (event.key === "f" && document.documentElement.requestFullscreen) {
        if (document.fullscreenElement) document.exitFullscreen();
        else document.documentElement.requestFullscreen().catch(function () {});
      }
    });

    var start = window.location.hash ? document.getElementById(window.location.hash.slice(1)) : null;
    showSlide(start && start.classList.contains("slide") ? start : all[0]);
  });
})();
