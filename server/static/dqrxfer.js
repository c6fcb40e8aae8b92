/*! dqrxfer.js: links between the Data Quality Reports of one event, from the
 *  dqrxfer links API.  Needs jQuery 3, loaded before this file.
 *  License: GPL-3.0-or-later.
 *
 *  dqrxfer.links(graceid, options)             -> jQuery promise of the report list
 *  dqrxfer.renderLinks(element, graceid, opts) -> fills element with a list of links
 *
 *  Options (all optional):
 *    server       base URL of the dqrxfer server (default: where this file came from)
 *    latest       true: only the newest revision of each site
 *    site         only this site
 *    timeout      milliseconds before giving up (default 10000)
 *  and for renderLinks:
 *    current      URL of the page's own report (default: location.href), or {site, revision}
 *    groupBySite  true: one heading and list per site
 *    headingLevel heading level of the site headings (default 3)
 *    showSize     true: add the number of files and their size
 *    refresh      seconds between updates (default: none)
 *    emptyText    text shown when the event has no reports
 */
(function (root) {
  "use strict";

  var VERSION = "1";
  var NEEDS_JQUERY = "dqrxfer.js needs jQuery 3 (not the slim build): load jquery.js before dqrxfer.js.";
  var SITE_NAMES = { llo: "LLO", lho: "LHO", virgo: "Virgo", kagra: "KAGRA", cit: "CIT" };
  var SCRIPT_PATH = /\/static\/dqrxfer\.js(?:[?#].*)?$/;

  /* The server this file was loaded from: the default target of every call. */
  function ownServer() {
    var script = root.document && root.document.currentScript;
    var scripts = root.document ? root.document.getElementsByTagName("script") : [];
    for (var i = scripts.length - 1; !script && i >= 0; i--) {
      if (SCRIPT_PATH.test(scripts[i].src)) {
        script = scripts[i];
      }
    }
    return script && SCRIPT_PATH.test(script.src) ? script.src.replace(SCRIPT_PATH, "") : "";
  }

  var defaultServer = ownServer();

  /* jQuery if it is there with Ajax (the slim build has none), else null. */
  function jQueryOrNull() {
    var $ = root.jQuery;
    return $ && $.ajax && $.Deferred ? $ : null;
  }

  function options(given) {
    var o = {
      server: defaultServer,
      latest: false,
      site: null,
      timeout: 10000,
      current: root.location ? root.location.href : "",
      groupBySite: false,
      headingLevel: 3,
      showSize: false,
      refresh: 0,
      emptyText: null
    };
    for (var key in given || {}) {
      if (Object.prototype.hasOwnProperty.call(given, key) && given[key] !== undefined) {
        o[key] = given[key];
      }
    }
    o.server = String(o.server || "").replace(/\/+$/, "");
    return o;
  }

  function siteName(site) {
    return SITE_NAMES[site] || String(site).toUpperCase();
  }

  /* A readable Error for a failed request: what happened and what it means. */
  function failure(xhr, status, o) {
    var where = o.server || "this server";
    var body = xhr && xhr.responseJSON;
    var error;
    if (status === "timeout") {
      error = new Error("The report server at " + where + " did not answer within " +
                        Math.round(o.timeout / 1000) + " s.");
      error.kind = "timeout";
    } else if (!xhr || xhr.status === 0) {
      error = new Error("The report server at " + where + " cannot be reached.");
      error.kind = "unreachable";
    } else if (body && body.error) {
      error = new Error("The report server refused the request: " + body.error);
      error.kind = "refused";
    } else {
      error = new Error("The report server at " + where + " answered " + xhr.status +
                        (xhr.statusText ? " " + xhr.statusText : "") + ".");
      error.kind = status === "parsererror" ? "bad-answer" : "server-error";
    }
    error.status = xhr ? xhr.status : 0;
    return error;
  }

  /* The reports of one event: a jQuery promise of an array of report objects
   * (graceid, site, revision, project, url, created, updated, file_count, bytes). */
  function links(graceid, given) {
    var $ = jQueryOrNull();
    if (!$) {
      throw new Error(NEEDS_JQUERY);
    }
    var o = options(given);
    var data = {};
    if (o.latest) {
      data.latest = 1;
    }
    if (o.site) {
      data.site = o.site;
    }
    return $.ajax({
      url: o.server + "/api/v1/events/" + encodeURIComponent(graceid) + "/reports",
      data: data,
      dataType: "json",
      // No X-Requested-With: the API is called as cross-origin even from a
      // report page on the same host (sandboxed, its origin is opaque), and
      // that header would cost a CORS preflight per request.
      crossDomain: true,
      timeout: o.timeout
    }).then(
      function (body) {
        return body.reports;
      },
      function (xhr, status) {
        return $.Deferred().reject(failure(xhr, status, o)).promise();
      }
    );
  }

  function isCurrent(report, current) {
    if (!current) {
      return false;
    }
    if (typeof current === "object") {
      return report.site === current.site && String(report.revision) === String(current.revision);
    }
    var here = String(current).split("#")[0].split("?")[0];
    return here.indexOf(report.url) === 0 || here + "/" === report.url;
  }

  function shortTime(iso) {
    // "2023-05-18T12:10:00Z" -> "2023-05-18 12:10 UTC" (the API always answers in UTC)
    return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(iso) ? iso.slice(0, 10) + " " + iso.slice(11, 16) + " UTC" : iso;
  }

  function sizeText(report) {
    var bytes = Number(report.bytes) || 0;
    var units = ["B", "kB", "MB", "GB", "TB"];
    var unit = 0;
    while (bytes >= 1000 && unit < units.length - 1) {
      bytes /= 1000;
      unit++;
    }
    var amount = unit === 0 ? String(bytes) : bytes.toFixed(bytes < 10 ? 1 : 0);
    var files = report.file_count === 1 ? "1 file" : report.file_count + " files";
    return files + ", " + amount + " " + units[unit];
  }

  function element(tag, className, text) {
    var node = root.document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function item(report, o) {
    var li = element("li", "dqrxfer-report");
    li.setAttribute("data-site", report.site);
    li.setAttribute("data-revision", String(report.revision));
    var label = siteName(report.site) + " revision " + report.revision;
    // Under a site heading the visible text drops the site; the accessible name keeps it.
    var link = element("a", "dqrxfer-link", o.groupBySite ? "revision " + report.revision : label);
    if (o.groupBySite) {
      link.setAttribute("aria-label", label);
    }
    // Only web links: a URL from the database never becomes a script.
    link.href = /^https?:\/\//i.test(report.url) ? report.url : "#";
    li.appendChild(link);
    li.appendChild(root.document.createTextNode(" "));
    var time = element("time", "dqrxfer-time", shortTime(report.updated));
    time.setAttribute("datetime", report.updated);
    li.appendChild(time);
    if (o.showSize) {
      li.appendChild(root.document.createTextNode(" "));
      li.appendChild(element("span", "dqrxfer-size", sizeText(report)));
    }
    if (isCurrent(report, o.current)) {
      li.className += " dqrxfer-current";
      link.setAttribute("aria-current", "page");
      li.appendChild(root.document.createTextNode(" "));
      li.appendChild(element("span", "dqrxfer-this", "(this report)"));
    }
    return li;
  }

  function list(reports, o, label) {
    var ul = element("ul", "dqrxfer-list");
    ul.setAttribute("aria-label", label);
    for (var i = 0; i < reports.length; i++) {
      ul.appendChild(item(reports[i], o));
    }
    return ul;
  }

  function message(node, kind, text) {
    var p = element("p", "dqrxfer-" + kind, text);
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    node.replaceChildren ? node.replaceChildren(p) : (node.innerHTML = "", node.appendChild(p));
  }

  function draw(node, graceid, reports, o) {
    if (!reports.length) {
      message(node, "empty", o.emptyText || "No reports for " + graceid + " yet.");
      return;
    }
    var parts = [];
    if (!o.groupBySite) {
      parts.push(list(reports, o, "Reports of " + graceid));
    } else {
      var sites = [];
      var bySite = {};
      for (var i = 0; i < reports.length; i++) {
        var site = reports[i].site;
        if (!bySite[site]) {
          bySite[site] = [];
          sites.push(site);
        }
        bySite[site].push(reports[i]);
      }
      for (var j = 0; j < sites.length; j++) {
        var section = element("section", "dqrxfer-site");
        section.setAttribute("data-site", sites[j]);
        var level = Math.min(6, Math.max(1, parseInt(o.headingLevel, 10) || 3));
        section.appendChild(element("h" + level, "dqrxfer-site-name", siteName(sites[j])));
        var newestFirst = bySite[sites[j]].slice().reverse();
        section.appendChild(list(newestFirst, o, siteName(sites[j]) + " reports of " + graceid));
        parts.push(section);
      }
    }
    node.innerHTML = "";
    for (var k = 0; k < parts.length; k++) {
      node.appendChild(parts[k]);
    }
  }

  function resolve(target) {
    if (target && target.jquery) {
      return target[0] || null;
    }
    if (typeof target === "string") {
      return root.document.querySelector(target);
    }
    return target && target.nodeType === 1 ? target : null;
  }

  /* Fill ``target`` (an element, a selector or a jQuery object) with links to
   * the reports of ``graceid``.  Returns a jQuery promise of the reports, or
   * null when jQuery is missing (the element then says so). */
  function renderLinks(target, graceid, given) {
    var node = resolve(target);
    if (!node) {
      throw new Error("dqrxfer.renderLinks: no element matches " + target);
    }
    if (node.dqrxferTimer) {
      root.clearTimeout(node.dqrxferTimer);
      node.dqrxferTimer = null;
    }
    if (!jQueryOrNull()) {
      message(node, "error", NEEDS_JQUERY);
      if (root.console) {
        root.console.error(NEEDS_JQUERY);
      }
      return null;
    }
    var o = options(given);
    var shown = null;
    node.classList.add("dqrxfer-links");

    function update() {
      node.setAttribute("aria-busy", "true");
      return links(graceid, o).then(
        function (reports) {
          var key = JSON.stringify(reports);
          if (key !== shown) {
            shown = key;
            draw(node, graceid, reports, o);
          }
          return reports;
        },
        function (error) {
          shown = null;
          message(node, "error", "Links to the other reports are unavailable. " + error.message);
          return error;
        }
      ).always(function () {
        node.removeAttribute("aria-busy");
        if (o.refresh > 0) {
          node.dqrxferTimer = root.setTimeout(update, o.refresh * 1000);
        }
      });
    }

    var $ = jQueryOrNull();
    var first = update();
    // The caller's promise rejects on failure (the element already says why).
    return first.then(function (result) {
      return result instanceof Error ? $.Deferred().reject(result).promise() : result;
    });
  }

  root.dqrxfer = {
    version: VERSION,
    server: defaultServer,
    links: links,
    renderLinks: renderLinks,
    siteName: siteName
  };
})(typeof window !== "undefined" ? window : this);
