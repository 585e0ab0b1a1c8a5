#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_files
short_description: Converge a list of files and directories in one run
description:
  - Takes every file, directory and removal a role wants on a boot server and converges
    them in one module run, in the order given.
  - Plans every entry first, running each O(files[].validate) check on a temporary copy,
    and changes nothing at all when any entry is wrong.
  - Use it through the action plugin of the same name, which renders O(files[].template)
    and reads O(files[].src) on the controller and sends large files only when their
    checksum differs.
  - Supports check mode and diff mode (content diffs of text files not marked secret).
version_added: "0.2.0"
author: ggnet
options:
  files:
    description: The wanted paths.
    type: list
    elements: dict
    required: true
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      state:
        description:
          - C(file) has the given content; C(touch) exists (created empty, never truncated);
            C(directory) exists with its parents; C(absent) is removed (a directory with
            what it holds).
          - Default C(file) when content is given, otherwise C(directory).
        type: str
        choices: [file, directory, absent, touch]
      content: {description: Wanted text (the plugin fills it from template or src)., type: str}
      checksum: {description: SHA-1 of wanted bytes that travel as a file (set by the plugin)., type: str}
      source: {description: A file on the server whose bytes are wanted here., type: path}
      owner: {description: User name., type: str}
      group: {description: Group name., type: str}
      mode: {description: Octal mode as a string (C("0644")); new files default to 0644, new directories 0755., type: raw}
      recurse: {description: A directory's owner and group are given to everything it holds., type: bool, default: false}
      validate: {description: Command run on a temporary copy of new content; C(%s) is its path., type: str}
      secret: {description: Never show this file's content in a diff., type: bool, default: false}
  transferred:
    description: Server-side copies of checksum entries' bytes, by path (set by the plugin).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Write the unit files and their directory
  ggnet_files:
    files:
      - {path: /etc/ggnet, state: directory, mode: "0755"}
      - {path: /etc/systemd/system/ggnet-api.service, template: ggnet-api.service.j2, mode: "0644"}
      - {path: /etc/ggnet/old.conf, state: absent}
"""

RETURN = r"""
files:
  description: Every entry, with what converging it changed (or would change).
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/ggnet, changed: true, actions: [create directory]}]
changed_paths:
  description: The paths that changed.
  returned: always
  type: list
  elements: str
needs_transfer:
  description: Paths whose bytes must be sent before anything is changed (the plugin does).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.files import FileError, converge


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "required": True},
            "transferred": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    try:
        changes, needed = converge(
            module.params["files"], module.check_mode, module.params["transferred"]
        )
    except FileError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename}: {exc.strerror}")
    diff = [
        {
            "before_header": c.path,
            "after_header": c.path,
            "before": c.before,
            "after": c.after,
        }
        for c in changes
        if c.changed and c.before is not None and c.after is not None
    ]
    result = {
        "changed": any(c.changed for c in changes) and (module.check_mode or not needed),
        "files": [{"path": c.path, "changed": c.changed, "actions": c.actions} for c in changes],
        "changed_paths": [c.path for c in changes if c.changed],
        "needs_transfer": needed,
    }
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
