"""Where things are, for every test: the repository root and the optional real data beside it."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
# A sibling checkout's shared data (present on the project's machines and in CI; a user's
# clone does not have it: tests that need it skip).
CAMVID = REPO.parent / "shared" / "data" / "camvid"
