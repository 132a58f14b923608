#!/bin/sh
# Prints /etc/tether/agent.toml as the package installs it: the example FILE
# (config/agent.toml) with every setting commented out, so that a fresh install applies
# nothing until someone sets source.url.
cat <<'HEAD'
# As installed, every setting below is commented out: tetherd applies nothing, and
# refuses to start, until [source] url is set. Uncomment and edit what this host needs
# (man tether-agent.toml), then: systemctl enable --now tetherd
#
HEAD
sed -e 's/^\([^#[:space:]]\)/# \1/' "$1"
