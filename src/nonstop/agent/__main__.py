"""``python -m nonstop.agent PROJECT_DIR``: run the agent in the foreground (used by ``up``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nonstop.agent.daemon import Agent
from nonstop.agent.paths import Paths
from nonstop.config import load_config
from nonstop.errors import NonstopError


def main() -> None:
    project = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    paths = Paths(project)
    try:
        config = load_config(paths.config)
        asyncio.run(Agent(paths, config).run())
    except NonstopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
