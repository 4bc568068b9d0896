"""The aiohttp shell: settings, routes, handlers (parse → query → encode), errors, CLI."""
