# SPDX-License-Identifier: BSD-3-Clause
# The benchmark's Python applications: WSGI (gunicorn) and ASGI (uvicorn), both answering "ok".


def wsgi(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '3')])
    return [b'ok\n']


async def asgi(scope, receive, send):
    if scope['type'] != 'http':
        return
    await send({'type': 'http.response.start', 'status': 200,
                'headers': [(b'content-type', b'text/plain'), (b'content-length', b'3')]})
    await send({'type': 'http.response.body', 'body': b'ok\n'})
