#!/usr/bin/env bash
# Make sure a Docker engine is installed and running. Idempotent: does nothing when
# `docker info` already answers. Installs Debian's docker.io when dockerd is missing.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing Debian's docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd" >&2
  mkdir -p /var/log
  # setsid: the engine must outlive the shell that started it.
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi

if ! docker info >/dev/null 2>&1; then
  echo "ensure-docker: the Docker engine did not start; see /var/log/dockerd.log" >&2
  tail -n 20 /var/log/dockerd.log >&2 || true
  exit 1
fi
