# Sourced by the Node-based interop scripts (tests/interop/node/run.sh,
# tests/interop/conformance/run.sh): installs, once, Node 22 and the pinned
# MCP packages into project-local folders, puts Node 22 first on PATH and
# sets $node22, $tools (the packages' folder) and $conformance (the suite's
# entry point). Needs $root and a `skip REASON` function.

NODE_MAJOR="22"
SDK_VERSION="1.32.2"
CONFORMANCE_VERSION="0.2.0-alpha.12"
INSPECTOR_VERSION="2.12.0" # needs Node >= 22.19

command -v npm >/dev/null 2>&1 || skip "npm is not installed"
command -v node >/dev/null 2>&1 || skip "node is not installed"

# Node 22 as an npm package: the conformance suite needs Node >= 22.
node22="$root/.tools/node22"
if ! "$node22/node_modules/.bin/node" -e "process.exit(process.versions.node.split('.')[0] === '$NODE_MAJOR' ? 0 : 1)" 2>/dev/null; then
  echo "node interop: installing Node $NODE_MAJOR (the npm package node@$NODE_MAJOR) into $node22" >&2
  npm install --prefix "$node22" --no-audit --no-fund --loglevel=error "node@$NODE_MAJOR" \
    || skip "npm could not install node@$NODE_MAJOR"
fi
# From here on `node` (and the system npm, which runs on `node`) is Node 22.
export PATH="$node22/node_modules/.bin:$PATH"
[ "$(node -p 'process.versions.node.split(".")[0]')" = "$NODE_MAJOR" ] || { echo "node $NODE_MAJOR is not first on PATH" >&2; exit 1; }

tools="$root/.tools/node-interop"
modules="$tools/node_modules/@modelcontextprotocol"
installed() { node -e "try { process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1) } catch { process.exit(1) }" "$modules/$1/package.json" "$2"; }
if ! installed sdk "$SDK_VERSION" || ! installed conformance "$CONFORMANCE_VERSION" || ! installed inspector "$INSPECTOR_VERSION"; then
  echo "node interop: installing the TypeScript MCP SDK $SDK_VERSION, the conformance suite $CONFORMANCE_VERSION and the Inspector $INSPECTOR_VERSION (npm) into $tools" >&2
  npm install --prefix "$tools" --save-exact --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/sdk@$SDK_VERSION" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
    || skip "npm could not install the MCP packages"
  # npm may place a package the others depend on in a nested folder; the
  # top-level ones must be exactly the pinned versions.
  installed sdk "$SDK_VERSION" && installed conformance "$CONFORMANCE_VERSION" && installed inspector "$INSPECTOR_VERSION" \
    || { echo "node interop: npm did not install the pinned versions" >&2; exit 1; }
fi
conformance="$modules/conformance/dist/index.js"
