"""Train one roadmap step (or a sweep of them): `python run.py +roadmap=step05_kernel7`, `python run.py -m ...`."""
import sys

import hydra
from omegaconf import DictConfig

from roadmap.train import FAILURES, run_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
    if FAILURES:
        print(f"{len(FAILURES)} job(s) failed:\n" + "\n".join(f"  {line}" for line in FAILURES), file=sys.stderr)
        sys.exit(1)
