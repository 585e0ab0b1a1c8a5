"""The API's systemd unit as the template module renders it (trim_blocks on)."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "roles/ggnet_api/templates/ggnet-api.service.j2"


def _render(**tls: str) -> list[str]:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    text = env.from_string(TEMPLATE.read_text()).render(
        ansible_managed="managed",
        _ggnet_api_venv_dir="/opt/ggnet/venv",
        _ggnet_api_config_file="/etc/ggnet/api.yml",
        _ggnet_api_code_dir="/opt/ggnet/code",
        _ggnet_api_collections_dir="/opt/ggnet/collections",
        ggnet_api_preflight_on_start=True,
        ggnet_api_preflight_blocks_start=False,
        ggnet_api_listen="10.213.0.10",
        ggnet_api_port=8080,
        ggnet_api_threads=16,
        ggnet_api_tls_cert=tls.get("cert", ""),
        ggnet_api_tls_key=tls.get("key", ""),
    )
    return text.splitlines()


@pytest.mark.parametrize("tls", [{}, {"cert": "/etc/ggnet/api.crt", "key": "/etc/ggnet/api.key"}])
def test_the_serve_line_ends_where_it_should(tls):
    # A block tag closing the ExecStart line once ate its newline: systemd then read
    # `--config /etc/ggnet/api.ymlRestart=on-failure` and the API never started.
    lines = _render(**tls)
    (serve,) = [ln for ln in lines if ln.startswith("ExecStart=")]
    assert lines[lines.index(serve) + 1] == "Restart=on-failure"
    want = " --config /etc/ggnet/api.yml"
    if tls:
        want += f" --certfile {tls['cert']} --keyfile {tls['key']}"
    assert serve.endswith(want), serve
