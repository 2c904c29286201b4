#!/bin/sh
# System packages the gateway (`recdeploy gateway`) needs: nginx (Debian's package; no njs
# needed) and the openssl CLI (self-signed certificates). `make setup` runs this: as root it
# installs what is missing with apt-get; as anyone else it prints exactly what is missing and
# how to install it, and does not fail (the rest of recdeploy works without them).
missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages for the gateway:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing
    # Debian starts the packaged nginx on port 80; the gateway runs its own
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
else
    echo "recdeploy: the gateway needs system packages that are missing:$missing" >&2
    echo "  install them with: sudo apt-get install -y$missing   (or run make setup as root)" >&2
fi
exit 0
