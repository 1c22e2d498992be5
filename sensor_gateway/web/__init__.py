"""The built-in night view (``crampwatch dashboard``).

:func:`sensor_gateway.web.app.create_app` builds the aiohttp application;
:mod:`sensor_gateway.web.svg` draws its charts; :mod:`sensor_gateway.web.render`
holds the Jinja2 environment shared with the morning report.
"""
