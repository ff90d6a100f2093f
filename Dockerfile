# kite's container image: FROM scratch, holding a static kite binary and a CA
# bundle for the AWS SDK's TLS, nothing else. scripts/build-image.sh builds
# both into dist/image/ and then this image, in one command:
#
#   scripts/build-image.sh kite:latest
#
# (docker/Dockerfile.multistage does the same inside Docker, for machines
# that can pull rust:1-bookworm.)
FROM scratch
COPY dist/image/kite /kite
COPY dist/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# nobody:nogroup, by number: a scratch image has no /etc/passwd.
USER 65534:65534
ENTRYPOINT ["/kite"]
CMD ["proxy"]
