"""``viewrt studio``: a local web page over the runtime: pick a scene, add, remove and pin
views, watch the K/V cache and the latency per step, render a frame or a free camera, and
switch backends with the same views.

- :mod:`viewrt.studio.scenes`: the scenes on offer (synthetic, or a scene list) and the
  free camera between two frames;
- :mod:`viewrt.studio.state`: the page's sessions over
  :class:`viewrt.serve.session.SessionManager` (bounds, idle timeout), answers read back
  from the runtime;
- :mod:`viewrt.studio.app`: the Starlette app (JSON API + the static page in ``static/``);
- :mod:`viewrt.studio.browser`: drives the page in a headless chromium (playwright), for
  the browser test and the README's screenshot.

Starlette, uvicorn and scipy come with the ``studio`` extra.
"""
