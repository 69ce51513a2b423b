# The broker of the Celery production shape (compose.yml's `redis` service), built from the same
# Debian base as the lab's image with Debian's redis-server (7.0 in bookworm), instead of the
# official redis:7-bookworm image: a build needs only Debian's archive, not Docker Hub, so it
# builds wherever the lab's image builds (an offline mirror of the base, a registry that is not
# reachable). Nothing is persisted: no RDB snapshots, no append-only file.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive

# redis-server brings redis-tools (redis-cli) for the healthcheck.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*

# Not root: nobody (65534, the same in every Debian image), as redis writes no file here.
# Without a configuration file redis-server listens on every interface of its network namespace
# in protected mode: clients without a password are accepted over loopback only, which is how the
# lab's `celery-redis` service connects (it shares this container's network namespace).
USER 65534:65534
EXPOSE 6379
CMD ["redis-server", "--save", "", "--appendonly", "no"]
