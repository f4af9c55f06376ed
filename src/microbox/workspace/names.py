"""Where a workspace lives in a box, and the ref its base is kept under."""

DEFAULT_DEST = "/workspace"
BASE_REF = "refs/microbox/base"  # microbox's own ref: no branch of the user's is touched
