#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the pool, its images and their first versions, in one call."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ggnet_images
short_description: Keep a ggnet pool and its images in line with ggnet_images
description:
  - Creates the pool (only when O(storage.vdevs) lists what to build it from), the
    C(images) and C(writebacks) datasets, and every image of O(images) that is missing,
    empty at its size or imported from its C(source) (raw or qcow2), with a first version.
  - Existing images are never changed or destroyed; a pinned C(version) that does not
    exist is an error.
  - One call for all images; the writebacks are not read.
extends_documentation_fragment:
  - ggnet_storage
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: ggnet
"""

EXAMPLES = r"""
- name: Pool and images
  ggnet_images:
    storage: "{{ ggnet_storage }}"
    images: "{{ ggnet_images }}"
"""

RETURN = r"""
actions:
  description: What was (or, in check mode, would be) done, in order.
  returned: always
  type: list
  elements: dict
images:
  description: Per image, its versions (oldest first) and the version clients boot.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.ggnet.storage import converge_images
from ansible.module_utils.ggnet.storage.module_glue import STORAGE_ARGS, run_module


def main():
    module = AnsibleModule(
        argument_spec={**STORAGE_ARGS},
        supports_check_mode=True,
    )

    def operation():
        return converge_images(module.params["storage"], module.params["images"], module.check_mode)

    run_module(module, operation)


if __name__ == "__main__":
    main()
