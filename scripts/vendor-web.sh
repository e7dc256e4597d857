#!/bin/sh
# Vendor the web page's libraries from the npm registry into companion/server/static/vendor/,
# with their licences. Pinned versions; `npm pack` checks each tarball's integrity.
# Run from anywhere: `make vendor` (needs npm; the result is committed, so users do not).
set -eu
MARKED=18.2.1        # Markdown -> HTML (MIT)
DOMPURIFY=3.5.0      # HTML sanitiser (Apache-2.0 or MPL-2.0)
HIGHLIGHT=11.11.1    # code highlighting, @highlightjs/cdn-assets (BSD-3-Clause)

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/companion/server/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "marked@$MARKED" "dompurify@$DOMPURIFY" "@highlightjs/cdn-assets@$HIGHLIGHT" >/dev/null
for tgz in *.tgz; do
  mkdir "${tgz%.tgz}" && tar xzf "$tgz" -C "${tgz%.tgz}"
done
m="marked-$MARKED/package"
d="dompurify-$DOMPURIFY/package"
h="highlightjs-cdn-assets-$HIGHLIGHT/package"
mkdir -p "$out"
cp "$m/lib/marked.umd.js" "$out/marked.umd.js"
cp "$m/LICENSE" "$out/LICENSE.marked.txt"
cp "$d/dist/purify.min.js" "$out/purify.min.js"
cp "$d/LICENSE" "$out/LICENSE.dompurify.txt"
cp "$h/highlight.min.js" "$out/highlight.min.js"
cp "$h/styles/github.min.css" "$out/hljs-light.min.css"
cp "$h/styles/github-dark.min.css" "$out/hljs-dark.min.css"
cp "$h/LICENSE" "$out/LICENSE.highlightjs.txt"
cat > "$out/VERSIONS.txt" <<VERSIONS
marked $MARKED (MIT)
dompurify $DOMPURIFY (Apache-2.0 OR MPL-2.0)
@highlightjs/cdn-assets $HIGHLIGHT (BSD-3-Clause)
Made by scripts/vendor-web.sh; do not edit by hand.
VERSIONS
echo "vendored into $out:"
ls "$out"
