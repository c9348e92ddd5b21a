"""Containers that outlive the command that started them: `shipyard run` and its lifecycle.

- `model`: the values (a container's plan, its live state, port mappings);
- `options`: docker's option syntax (`-p`, `-v`, `-e`, `--memory`, …) into those values;
- `store`: containers by name or id, over the index and `state_root/containers/<id>/`,
  and the truth about whether one still runs;
- `supervisor`: the per-container process that owns the rootfs mount, the network
  namespace, the port forwarders and the log, and outlives the CLI;
- `rootfs`, `network`, `portproxy`, `logs`, `attach`: its parts;
- `lifecycle`: stop, kill, remove and cleanup, from any process.
"""
