#!/usr/bin/env bash
# Installs the Debian contrib/non-free packages listed in $1 (the corpus builder's pico voices) through
# apt sources and package lists of the project's own, passed with -o Dir::Etc::SourceList / Dir::State::Lists,
# so the system's apt sources and lists stay as they are. Idempotent; a no-op when all are installed.
# Their licences are not DFSG-free: JEPATOK_NO_NONFREE=1 skips them (the voices are then reported missing).
# A failure here only warns: the corpus builder works without these voices.
set -uo pipefail
list=${1:-system-packages-nonfree.txt}
if [ "${JEPATOK_NO_NONFREE:-0}" = 1 ]; then echo "JEPATOK_NO_NONFREE=1: not installing $list"; exit 0; fi
mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list" | tr -d ' ')
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# The archive the system already uses (first non-security entry), its codename and keyring.
uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
if [ -z "$uri" ]; then
  uri=$(sed -e 's/\[[^]]*\]//' /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" {print $2}' | grep -v security | head -1)
fi
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -z "$uri" ] || [ -z "$codename" ] || [ ! -f "$keyring" ]; then
  echo "warning: no Debian archive found in the apt sources; not installing ${missing[*]}" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
state=/var/lib/jepatok-apt
$SUDO mkdir -p "$state/lists/partial"
echo "deb [signed-by=$keyring] $uri $codename main contrib non-free" | $SUDO tee "$state/sources.list" >/dev/null
opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::Lists=$state/lists")
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian non-free packages: ${missing[*]}"
if ! { $SUDO apt-get "${opts[@]}" update -qq && \
       $SUDO apt-get "${opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "warning: could not install ${missing[*]}; the corpus builder runs without them" >&2
fi
exit 0
