"""Third-party submissions: the sandbox (wire protocol, session, child, proxies), its confinement, admission and
evaluation of a submission, and the submissions leaderboard."""
