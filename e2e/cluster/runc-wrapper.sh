#!/usr/bin/env bash
# containerd runs runc through this wrapper. Our machines withhold CAP_SYS_RESOURCE even
# from root, so a process may not lower its OOM score; the kubelet asks for negative scores
# (-998 for pod sandboxes, -997 for Guaranteed pods) and runc then fails with "failed to
# update /proc/self/oom_score_adj: Permission denied". Raise such scores to 0 before runc
# reads the container's config; everything else is passed through untouched.
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --bundle ]]; then
    config="${args[i + 1]}/config.json"
    [[ -f $config ]] && sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$config"
  fi
done
exec runc "$@"
