"""The operator console: one ASGI app (FastAPI on uvicorn) inside the node, serving the pages, the REST API under
``/api/v1``, ``/metrics`` and ``/healthz``. Off unless ``[http] enabled`` (see :mod:`dicomnode.web.settings`).

Nothing is imported here: loading a config must not import the web stack.

Layout
------
``settings.py``   the ``[http]`` section, roles, accounts, password and token hashing (no web imports)
``auth.py``       sessions, API tokens, roles, CSRF, login rate limiting (:func:`~dicomnode.web.auth.require`)
``app.py``        :func:`~dicomnode.web.app.create_app`: login/logout, error pages, security headers, /healthz,
                  /metrics, static files, the API and the pages routers
``api.py``        the REST API (JSON); every handler calls the same function as the CLI (:mod:`dicomnode.admin`)
``templating.py`` the Jinja2 environment (autoescaping always on) and :func:`~dicomnode.web.templating.render`
``server.py``     uvicorn in a thread of the node, started and stopped by :class:`dicomnode.node.Node`
``pages.py``      the HTML pages (the UI's module); ``templates/`` and ``static/`` are shipped in the package

How to add a page
-----------------
1. Route: in ``dicomnode/web/pages.py``, on its ``router`` (an ``APIRouter`` included with a viewer-or-more
   dependency, so an unprotected page cannot exist)::

       from fastapi import Request
       from dicomnode.web.auth import Operator, Viewer
       from dicomnode.web.templating import render

       @router.get("/jobs", include_in_schema=False)
       def jobs_page(request: Request, user: Viewer):
           c = request.app.state.console                  # the Console: .config(), .db, .node, .audit(...)
           return render(request, "jobs.html", {"jobs": admin.jobs_view(c.db, limit=200)})

2. Role: type the ``user`` parameter ``Viewer``, ``Operator`` or ``Admin`` (``dicomnode.web.auth``), or add
   ``dependencies=[Depends(require(Role.OPERATOR))]``. Not logged in: 401 (a browser gets the login form); role too
   low: 403. In a template, ``user.role.allows(Role.OPERATOR)`` hides buttons the user may not press (the server
   refuses them anyway).
3. Forms: every POST form carries the session's CSRF token; put ``{{ csrf_field() }}`` inside the ``<form>`` (or
   send the header ``X-CSRF-Token: {{ csrf_token }}`` from script). :func:`~dicomnode.web.auth.require` checks it
   on every unsafe request made with the session cookie: a missing or wrong token is 403. After a POST, answer
   with ``RedirectResponse(url, status_code=303)``. Audit every action: ``c.audit("job requeued", user, ...)``
   (the API's actions in :mod:`dicomnode.web.api` do it through :mod:`dicomnode.admin` with ``actor=user.name``;
   call the same functions, or the API's handler functions, rather than writing logic again).
4. Template: ``templates/NAME.html`` with ``{% extends "base.html" %}`` and ``{% block content %}...{% endblock %}``
   (also ``title``, ``head``, ``scripts``). Autoescaping is on: never use ``|safe`` on data from the network
   (series descriptions, AE titles, errors). Static files: ``{{ static('x.css') }}`` -> ``/static/x.css``
   (``dicomnode/web/static/``); no CDN. The Content-Security-Policy allows scripts, styles and images from the node
   only (no inline ``<script>`` or ``style=``; images may be ``data:`` URLs).
5. Files from the data folder (result PNGs...): build the path with :func:`dicomnode.web.app.safe_path` (refuses
   ``..``, absolute parts and links out of the folder: 404) and never put a UID from the network into a path
   unchecked.

Where the data comes from (each returns JSON-ready dicts; epoch seconds)
------------------------------------------------------------------------
* status: :func:`dicomnode.obs.status.status_dict` (``dicomnode status --json``)
* series: :func:`dicomnode.admin.series_list`, :func:`~dicomnode.admin.series_detail` (senders, jobs);
  force completion: ``c.node.force_complete(uid, actor=user.name)``
* jobs: :func:`dicomnode.admin.jobs_view`, :func:`~dicomnode.admin.job_view` (traceback, timings, results),
  :func:`~dicomnode.admin.requeue_job`, :func:`~dicomnode.admin.retry_failed_jobs`, :func:`~dicomnode.admin.reprocess`
* outbox: :func:`dicomnode.admin.exports_view`, :func:`~dicomnode.admin.requeue_export`,
  :func:`~dicomnode.admin.retry_dead_exports` (bulk, by destination)
* audit: :func:`dicomnode.admin.audit_events` (time, event, series, user, sender)
* rules: :func:`dicomnode.admin.route_explanation` (a file path);
  destinations: :func:`~dicomnode.admin.check_destinations`
* config: :func:`dicomnode.config.effective_config` (secrets redacted); reload: ``c.node.reload_config(actor=...)``
* metrics figures: :func:`dicomnode.obs.metrics.metrics_summary`
* an external viewer link: ``viewer_url(study_uid)`` in templates ("" when ``[http] viewer_url`` is unset)

Why FastAPI (on Starlette) and uvicorn: the API's OpenAPI document is generated from the same typed handlers that
validate the requests, so the served document cannot drift from the code and schemathesis fuzzes what really runs;
dependencies give one place for authentication, roles and CSRF; Starlette underneath serves the Jinja2 pages and
static files. uvicorn (h11, no C build needed) runs in a thread of the node with its own event loop, binds before
the node reports started, does TLS with the DICOM certificate, and stops gracefully with the node. The cost is
pydantic (with FastAPI): a binary wheel, no network at run time. Plain Starlette would need the OpenAPI document
written by hand beside the code.
"""
