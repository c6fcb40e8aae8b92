/* The event page: its reports per site (of one project or all), through the
 * helper, kept fresh. */
(function () {
  "use strict";
  var node = document.getElementById("reports");
  if (!node || !window.dqrxfer) {
    return;
  }
  window.dqrxfer.renderLinks(node, node.getAttribute("data-graceid"), {
    groupBySite: true,
    headingLevel: 2,
    showSize: true,
    refresh: Number(node.getAttribute("data-refresh")) || 0,
    project: node.getAttribute("data-project") || null,
    current: null
  });
})();
