/*! dqrxfer.js: links between the Data Quality Reports of one event, from the
 *  dqrxfer links API.  Needs jQuery 3, loaded before this file.
 *  License: GPL-3.0-or-later.
 *
 *  dqrxfer.links(graceid, options)             -> jQuery promise of the report list
 *  dqrxfer.renderLinks(element, graceid, opts) -> fills element with a list of links
 *
 *  Options (all optional):
 *    server       base URL of the dqrxfer server (default: where this file came from)
 *    latest       true: only the newest revision of each site (in each project)
 *    site         only this site
 *    project      only this project (default: all projects)
 *    timeout      milliseconds before giving up (default 10000)
 *  and for renderLinks:
 *    current      URL of the page's own report (default: location.href), or
 *                 {site, revision[, project]}
 *    groupBySite  true: one heading and list per site
 *    headingLevel heading level of the site headings (default 3)
 *    showProject  false: leave out the project of each report (default: shown)
 *    showSize     true: add the number of files and their size (KiB, MiB, GiB)
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
      project: null,
      timeout: 10000,
      current: root.location ? root.location.href : "",
      groupBySite: false,
      headingLevel: 3,
      showProject: true,
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

  /* Milliseconds as seconds, as precise as given: 1500 -> "1.5 s", 10000 -> "10 s". */
  function seconds(ms) {
    return String(Number(ms) / 1000) + " s";
  }

  /* This page's origin, or "" where there is no page.  window.origin is the
   * document's own ("null" in a sandbox); location.origin is its URL's. */
  function pageOrigin() {
    if (typeof root.origin === "string") {
      return root.origin;
    }
    var here = root.location;
    return here && here.origin ? String(here.origin) : "";
  }

  function originOf(url) {
    var match = /^[a-z][a-z0-9+.-]*:\/\/[^\/?#]+/i.exec(url || "");
    return match ? match[0].toLowerCase() : "";
  }

  /* "Cannot be reached" for a server that answers, but not to this page: the
   * browser hides a cross-origin answer without CORS headers, so that looks
   * the same as a server that is down. */
  function crossOriginMessage(where, origin) {
    if (origin === "null") {
      return "The report server at " + where + " cannot be reached from a sandboxed page" +
        " (origin null): it answers, but only to the origins in its cors_origins, which" +
        " cannot name a sandbox. Its public_read setting opens the links to every page.";
    }
    return "The report server at " + where + " cannot be reached from pages on " + origin +
      ": it answers, but not to this origin. Add " + origin + " to cors_origins in the" +
      " server's configuration.";
  }

  /* Whether ``url``'s server answers at all: a request the browser makes
   * without CORS (its answer stays opaque) succeeds when the server answers,
   * whatever its CORS headers, and fails when nothing does.  Resolves to
   * true, false, or null where the browser cannot tell (no fetch). */
  function answersAtAll(url, timeout) {
    var $ = jQueryOrNull();
    var settled = $.Deferred();
    if (typeof root.fetch !== "function") {
      return settled.resolve(null).promise();
    }
    var abort = typeof root.AbortController === "function" ? new root.AbortController() : null;
    var timer = root.setTimeout(function () {
      if (abort) {
        abort.abort();
      }
      settled.resolve(null);
    }, timeout);
    root.fetch(url, {
      mode: "no-cors",
      credentials: "omit",
      cache: "no-store",
      signal: abort ? abort.signal : undefined
    }).then(
      function () {
        settled.resolve(true);
      },
      function () {
        settled.resolve(false);
      }
    );
    return settled.always(function () {
      root.clearTimeout(timer);
    }).promise();
  }

  /* A readable Error for a failed request: what happened and what it means. */
  function failure(xhr, status, o) {
    var where = o.server || "this server";
    var body = xhr && xhr.responseJSON;
    var error;
    if (status === "timeout") {
      error = new Error("The report server at " + where + " did not answer within " +
                        seconds(o.timeout) + ".");
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

  /* The error of an unreachable server, with a hint when the server answers
   * but not to this page's origin (not in its cors_origins). */
  function explainUnreachable(error, url, o) {
    var $ = jQueryOrNull();
    var origin = pageOrigin();
    var target = originOf(url) || origin;
    if (error.kind !== "unreachable" || !origin || origin === target) {
      return $.Deferred().resolve(error).promise();
    }
    return answersAtAll(url, o.timeout).then(function (answers) {
      if (answers) {
        var explained = new Error(crossOriginMessage(o.server || "this server", origin));
        explained.kind = "cross-origin";
        explained.status = 0;
        return explained;
      }
      return error;
    });
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
    if (o.project) {
      data.project = o.project;
    }
    var url = o.server + "/api/v1/events/" + encodeURIComponent(graceid) + "/reports";
    return $.ajax({
      url: url,
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
        return explainUnreachable(failure(xhr, status, o), url, o).then(function (error) {
          return $.Deferred().reject(error).promise();
        });
      }
    );
  }

  function isCurrent(report, current) {
    if (!current) {
      return false;
    }
    if (typeof current === "object") {
      return report.site === current.site && String(report.revision) === String(current.revision) &&
        (!current.project || report.project === current.project);
    }
    var here = String(current).split("#")[0].split("?")[0];
    return here.indexOf(report.url) === 0 || here + "/" === report.url;
  }

  function shortTime(iso) {
    // "2023-05-18T12:10:00Z" -> "2023-05-18 12:10 UTC" (the API always answers in UTC)
    return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(iso) ? iso.slice(0, 10) + " " + iso.slice(11, 16) + " UTC" : iso;
  }

  /* Bytes in IEC binary units with one decimal ("950 B", "1.5 KiB", "17.5 MiB"),
   * as dqr-upload and the server's listings write them.  The tenth is rounded
   * half to even on the exact value, as Python's format() does. */
  function bytesText(count) {
    var bytes = Math.max(0, Number(count) || 0);
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var unit = 0;
    var scale = 1;
    while (bytes / scale >= 1024 && unit < units.length - 1) {
      scale *= 1024;
      unit++;
    }
    if (unit === 0) {
      return Math.round(bytes) + " B";
    }
    var tenths = (bytes * 10) / scale; // exact: scale is a power of two
    var whole = Math.floor(tenths);
    var rest = tenths - whole;
    if (rest > 0.5 || (rest === 0.5 && whole % 2 === 1)) {
      whole += 1;
    }
    return (whole / 10).toFixed(1) + " " + units[unit];
  }

  function sizeText(report) {
    var files = report.file_count === 1 ? "1 file" : report.file_count + " files";
    return files + ", " + bytesText(report.bytes);
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
    li.setAttribute("data-project", String(report.project));
    var label = siteName(report.site) + " revision " + report.revision;
    var text = o.groupBySite ? "revision " + report.revision : label;
    // Under a site heading the visible text drops the site, and the project
    // is a label of its own; the accessible name keeps both.
    var link = element("a", "dqrxfer-link", text);
    var name = o.showProject ? label + " (" + report.project + ")" : label;
    if (name !== text) {
      link.setAttribute("aria-label", name);
    }
    // Only web links: a URL from the database never becomes a script.
    link.href = /^https?:\/\//i.test(report.url) ? report.url : "#";
    li.appendChild(link);
    li.appendChild(root.document.createTextNode(" "));
    if (o.showProject) {
      var project = element("span", "dqrxfer-project", String(report.project));
      project.setAttribute("title", "project " + report.project);
      li.appendChild(project);
      li.appendChild(root.document.createTextNode(" "));
    }
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

  /* Newest revision first; one revision number in several projects by project. */
  function newestRevisionFirst(a, b) {
    var project = String(a.project) < String(b.project) ? -1 : String(a.project) > String(b.project) ? 1 : 0;
    return Number(b.revision) - Number(a.revision) || project;
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
        var newestFirst = bySite[sites[j]].slice().sort(newestRevisionFirst);
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
    siteName: siteName,
    bytesText: bytesText
  };
})(typeof window !== "undefined" ? window : this);
