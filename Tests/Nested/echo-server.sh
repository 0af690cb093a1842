#!/bin/busybox sh
# One HTTP exchange on stdin/stdout: answers with the request's Authorization header as the body.
auth=""
while IFS= read -r line; do
    line="$(printf '%s' "$line" | tr -d '\r')"
    [ -z "$line" ] && break
    case "$line" in [Aa]uthorization:*) auth="$line" ;; esac
done
printf 'HTTP/1.0 200 OK\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s\n' "$((${#auth} + 1))" "$auth"
