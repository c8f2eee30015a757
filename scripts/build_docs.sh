#!/usr/bin/env bash
# Build the documentation site (MkDocs + Material + mkdocstrings) with --strict: any warning
# (a broken link, a page missing from the nav, a docstring griffe cannot parse) fails the build.
#   bash scripts/build_docs.sh [VENV] [SITE_DIR]      (defaults: .venv, site)
# Installs the docs requirements into VENV when they are missing. The site is built into a
# staging folder beside SITE_DIR and renamed into place; an existing SITE_DIR is replaced only
# when an earlier run of this script wrote it (it holds .hf-lnorm-docs-site).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
SITE="${2:-site}"
MARKER=".hf-lnorm-docs-site"
REQUIREMENTS=('mkdocs>=1.6,<2' 'mkdocs-material>=9.5' 'mkdocstrings>=0.29' 'mkdocstrings-python>=1.16' 'ruff')

if [ ! -x "$VENV/bin/python" ]; then
  echo "build_docs.sh: no virtual environment at '$VENV' (build one with scripts/setup_env.sh)" >&2
  exit 2
fi
if [ -e "$SITE" ] && { [ ! -d "$SITE" ] || { [ -n "$(ls -A "$SITE")" ] && [ ! -f "$SITE/$MARKER" ]; }; }; then
  echo "build_docs.sh: '$SITE' exists and was not written by this script (no $MARKER); choose another SITE_DIR" >&2
  exit 2
fi
if ! "$VENV/bin/python" -c "import mkdocs, material, mkdocstrings, mkdocstrings_handlers.python" 2>/dev/null \
   || [ ! -x "$VENV/bin/ruff" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}" 2>&1 | grep -v '^WARNING: Location' || true
fi

parent="$(dirname "$SITE")"
mkdir -p "$parent"
stage="$(mktemp -d "$parent/.$(basename "$SITE").partial-XXXXXX")"
trap 'rm -rf "$stage"' EXIT
# mkdocstrings formats signatures with ruff; NO_MKDOCS_2_WARNING silences Material's notice banner
PATH="$(cd "$VENV/bin" && pwd):$PATH" NO_MKDOCS_2_WARNING=1 \
  "$VENV/bin/python" -m mkdocs build --strict --clean --site-dir "$stage"
touch "$stage/$MARKER"
chmod "$(printf '%o' $((0777 & ~0$(umask))))" "$stage"   # mktemp makes it 0700; follow the umask
if [ -e "$SITE" ]; then
  old="$(mktemp -d "$parent/.$(basename "$SITE").old-XXXXXX")"
  mv "$SITE" "$old/previous"
  mv "$stage" "$SITE"
  rm -rf "$old"
else
  mv "$stage" "$SITE"
fi
trap - EXIT
echo "build_docs.sh: site written to $SITE ($(find "$SITE" -name index.html | wc -l) pages)"
