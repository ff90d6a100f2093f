"""Terminates TLS on 127.0.0.1:PORT and relays the bytes to UPSTREAM, so a
plain-HTTP fake endpoint can stand in for the AWS APIs' HTTPS ones.

    python3 scripts/tls-relay.py PORT UPSTREAM_HOST:PORT CERT.pem KEY.pem

Used by scripts/symbol-order.sh, so that the profile kite's code order
comes from includes the TLS it speaks to AWS.
"""

import socket
import ssl
import sys
import threading


def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


def serve(client, ctx, upstream):
    try:
        tls = ctx.wrap_socket(client, server_side=True)
        plain = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(tls, plain), daemon=True).start()
    pump(plain, tls)


def main():
    port, upstream, cert, key = sys.argv[1:5]
    host, _, uport = upstream.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", int(port)))
    while True:
        client, _ = server.accept()
        args = (client, ctx, (host, int(uport)))
        threading.Thread(target=serve, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
