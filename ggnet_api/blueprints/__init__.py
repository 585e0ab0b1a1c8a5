"""The API's blueprints, one per area; app.create_app() registers ALL of them."""

from ggnet_api.blueprints import (
    anomalies,
    boot,
    discovery,
    fleet,
    health,
    images,
    jobs,
    machines,
    tokens,
)

ALL = (
    health.bp,
    boot.bp,
    jobs.bp,
    machines.bp,
    images.bp,
    discovery.bp,
    tokens.bp,
    fleet.bp,
    anomalies.bp,
)
