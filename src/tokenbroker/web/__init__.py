"""The HTTP edge: app factory, middlewares, routes. The only package that imports aiohttp.web."""
