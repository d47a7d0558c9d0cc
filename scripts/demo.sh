#!/usr/bin/env bash
# The demo: controller and three members in network namespaces with real
# charon. Not there yet: mpsad itself is still being written (issue 5).
echo "make demo: not available yet. The daemon (mpsad) is not written yet;"
echo "this command will start a controller and three members in network"
echo "namespaces with real charon once it is. Run 'make test' meanwhile."
exit 1
