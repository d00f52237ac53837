// tracer view: open the step a link points at (from the log, a chart, the first divergence),
// the "open all" / "close all" buttons of an episode, and its "go to step" box. Nothing is loaded from anywhere.
(function () {
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id && document.getElementById(id);
    if (!el) return;
    for (var e = el; e; e = e.parentElement) if (e.tagName === "DETAILS") e.open = true;
    el.scrollIntoView({ block: "start" });
  }
  window.addEventListener("hashchange", openTarget);
  document.addEventListener("DOMContentLoaded", openTarget);
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-details]");
    if (!button) return;
    var open = button.getAttribute("data-details") === "open";
    button.closest("section").querySelectorAll("details.step").forEach(function (d) { d.open = open; });
  });
  // "go to step": the input names its episode's anchor prefix.
  document.addEventListener("change", function (event) {
    var input = event.target.closest("input[data-steps]");
    if (input && input.value) location.hash = input.getAttribute("data-steps") + input.value;
  });
})();
