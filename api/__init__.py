"""The aiohttp shell: settings, one route table (``app``) over handlers split by concern
(``read``, ``stream``, ``write``, ``pages``, ``admin``: parse → query → encode), errors, auth,
live streams, metrics, the server and the CLI."""
