"""The OpenAPI 3.1 document of the JSON API, served at ``/api/v1/openapi.json``.

The tests replay it against a live server (schemathesis): every answer must
match the schemas below, which forbid undocumented fields, so the document
stays true as the API grows.
"""

from __future__ import annotations

from typing import Any

from dqrxfer import contract

#: The graceid forms of the report contract, in JSON Schema regex syntax.
GRACEID_PATTERN = (
    "^(?:"
    + "|".join(pattern.pattern.replace(r"\d", "[0-9]") for _, pattern in contract.GRACEID_FORMS)
    + ")$"
)

_TIMESTAMP = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601"}
_VALIDATORS = {
    "ETag": {"description": "hash of the body; send it back in If-None-Match"},
    "Cache-Control": {"description": "no-cache: revalidate on every use (a 304 is cheap)"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = {
            name: {"schema": {"type": "string"}, **doc} for name, doc in _VALIDATORS.items()
        }
    return answer


_ERROR = _json(_ref("Error"), "bad parameter: the message names it and the rule", False)
_NOT_MODIFIED = {"description": "not modified since the ETag (If-None-Match) or date given"}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _site_param(sites: tuple[str, ...]) -> dict[str, Any]:
    return _query(
        "site",
        {"type": "string", "enum": list(sites)},
        "only this site (matched case-insensitively; the legacy EGO means virgo)",
    )


def _project_param(projects: tuple[str, ...]) -> dict[str, Any]:
    return _query(
        "project",
        {"type": "string", "enum": list(projects)},
        "only this project (matched case-insensitively)",
    )


def _paging(what: str) -> list[dict[str, Any]]:
    return [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            f"{what} per page",
        ),
        _query(
            "cursor",
            {"type": "string"},
            "where the page starts: take it from the `next` URL of the previous page",
        ),
    ]


def _schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "description": "`<parameter>: <rule> (got ...)`"},
                "parameter": {"type": "string", "description": "the parameter at fault"},
            },
        },
        "Report": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "graceid",
                "site",
                "revision",
                "project",
                "url",
                "created",
                "updated",
                "file_count",
                "bytes",
            ],
            "properties": {
                "graceid": {"type": "string", "pattern": GRACEID_PATTERN},
                "site": {"type": "string", "description": "lower case: llo, lho, virgo, ..."},
                "revision": {"type": "integer", "minimum": 0},
                "project": {"type": "string"},
                "url": {
                    "type": "string",
                    "format": "uri",
                    "description": "the report directory (ends with /)",
                },
                "created": _TIMESTAMP,
                "updated": {**_TIMESTAMP, "description": "last file published (UTC)"},
                "file_count": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
                "files": {
                    "type": "array",
                    "items": _ref("ReportFile"),
                    "description": "the report's files, by path (only with `files=1`)",
                },
            },
        },
        "ReportFile": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "size", "sha256"],
            "properties": {
                "path": {"type": "string", "description": "relative to the report directory"},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {
                    "type": ["string", "null"],
                    "pattern": "^[0-9a-f]{64}$",
                    "description": "null for a file recorded without one",
                },
            },
        },
        "EventReports": {
            "type": "object",
            "additionalProperties": False,
            "required": ["graceid", "reports"],
            "properties": {
                "graceid": {"type": "string", "pattern": GRACEID_PATTERN},
                "reports": {
                    "type": "array",
                    "items": _ref("Report"),
                    "description": "by site, then revision, then project",
                },
            },
        },
        "ReportPage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reports", "next"],
            "properties": {
                "reports": {
                    "type": "array",
                    "items": _ref("Report"),
                    "description": "most recently updated first",
                },
                "next": {
                    "type": ["string", "null"],
                    "format": "uri",
                    "description": "URL of the next page, null on the last",
                },
            },
        },
        "EventSummary": {
            "type": "object",
            "additionalProperties": False,
            "required": ["graceid", "created", "updated", "report_count", "sites", "reports_url"],
            "properties": {
                "graceid": {"type": "string", "pattern": GRACEID_PATTERN},
                "created": {**_TIMESTAMP, "description": "when its first report arrived"},
                "updated": {**_TIMESTAMP, "description": "last change to any of its reports"},
                "report_count": {"type": "integer", "minimum": 0},
                "sites": {"type": "array", "items": {"type": "string"}},
                "reports_url": {"type": "string", "format": "uri"},
            },
        },
        "EventPage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["events", "next"],
            "properties": {
                "events": {
                    "type": "array",
                    "items": _ref("EventSummary"),
                    "description": "newest first",
                },
                "next": {"type": ["string", "null"], "format": "uri"},
            },
        },
        "Ping": {
            "type": "object",
            "additionalProperties": False,
            "required": ["time_ms", "version", "principal"],
            "properties": {
                "time_ms": {"type": "integer", "description": "server clock, ms since 1970"},
                "version": {"type": "string"},
                "principal": {"type": ["string", "null"]},
            },
        },
        "Upload": {
            "type": "object",
            "required": [
                "id",
                "state",
                "length",
                "sha256",
                "error",
                "graceid",
                "site",
                "revision",
                "project",
                "report_url",
            ],
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string"},
                "length": {"type": ["integer", "null"]},
                "sha256": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"]},
                "graceid": {"type": ["string", "null"]},
                "site": {"type": ["string", "null"]},
                "revision": {"type": ["integer", "null"]},
                "project": {"type": ["string", "null"]},
                "report_url": {"type": ["string", "null"]},
            },
        },
    }


def document(version: str, sites: tuple[str, ...], projects: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI document for a server with these sites and projects."""
    graceid = {
        "name": "graceid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": GRACEID_PATTERN},
        "description": contract.GRACEID_RULE.removeprefix("must be "),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dqrxfer links API",
            "version": version,
            "description": (
                "Read-only JSON about published Data Quality Reports. Answers carry an ETag "
                "and `Cache-Control: no-cache`: pollers get 304 when nothing changed. "
                "Errors are JSON objects whose `error` names the parameter and the rule."
            ),
        },
        "paths": {
            "/api/v1/ping": {
                "get": {
                    "operationId": "ping",
                    "summary": "server time, version and the caller's principal",
                    "responses": {"200": _json(_ref("Ping"), "pong", False)},
                }
            },
            "/api/v1/events/{graceid}/reports": {
                "get": {
                    "operationId": "eventReports",
                    "summary": "every report of one event",
                    "description": (
                        "A valid graceid without reports (yet) is 200 with an empty list: "
                        "pages poll for events whose reports are still coming. "
                        "An invalid graceid is 400."
                    ),
                    "parameters": [
                        graceid,
                        _site_param(sites),
                        _project_param(projects),
                        _query(
                            "latest",
                            {"type": "string", "enum": ["0", "1", "true", "false"]},
                            "1: only the newest revision of each site in each project",
                        ),
                        _query(
                            "files",
                            {"type": "string", "enum": ["0", "1", "true", "false"]},
                            "1: each report with the list of its files (path, size, sha256)",
                        ),
                    ],
                    "responses": {
                        "200": _json(_ref("EventReports"), "the event's reports"),
                        "304": _NOT_MODIFIED,
                        "400": _ERROR,
                    },
                }
            },
            "/api/v1/reports": {
                "get": {
                    "operationId": "reports",
                    "summary": "recent reports, most recently updated first",
                    "parameters": [
                        _site_param(sites),
                        _project_param(projects),
                        _query(
                            "since",
                            {"type": "string", "format": "date-time"},
                            "updated at or after (ISO 8601 date or date-time; UTC without a zone)",
                        ),
                        _query(
                            "until",
                            {"type": "string", "format": "date-time"},
                            "updated before (ISO 8601 date or date-time)",
                        ),
                        *_paging("reports"),
                    ],
                    "responses": {
                        "200": _json(_ref("ReportPage"), "one page of reports"),
                        "304": _NOT_MODIFIED,
                        "400": _ERROR,
                    },
                }
            },
            "/api/v1/events": {
                "get": {
                    "operationId": "events",
                    "summary": "recent events with the sites that reported on them",
                    "parameters": _paging("events"),
                    "responses": {
                        "200": _json(_ref("EventPage"), "one page of events"),
                        "304": _NOT_MODIFIED,
                        "400": _ERROR,
                    },
                }
            },
            "/api/v1/uploads/{upload_id}": {
                "get": {
                    "operationId": "upload",
                    "summary": "what the server made of one upload",
                    "parameters": [
                        {
                            "name": "upload_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "the tus upload id",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Upload"), "the upload's record"),
                        "304": _NOT_MODIFIED,
                        "404": _json(_ref("Error"), "no such upload", False),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "304": _NOT_MODIFIED,
                    },
                }
            },
        },
        "components": {"schemas": _schemas()},
    }
