"""The Fustor agent: scans and watches source trees and pushes their metadata to Fusion.

runner (run_agent, reload) → pipe (sessions, roles) → source (watcher + scan limiter per
source) → scanner / audit / sentinel / watcher → rows → sender (batches over HTTP).
"""
