#!/bin/sh
# The shared, expensive part of every service image (runs once per bake, whatever the number of services).
set -e
mkdir -p /opt/common/bin
date +%s%N > /opt/common/built-at
echo "common $(cat /opt/common/VERSION)" > /opt/common/bin/banner
