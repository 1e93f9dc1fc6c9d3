"""What the tests share.

servers      a real server in a background thread (ServerThread), `myelin-serve` as a process
             (ServerProcess), settings for tests, waiting helpers
tritonclient the stock KServe client, run from its own virtualenv
rpcs         calling any RPC with any bytes; the bad requests every service shares
strategies   hypothesis strategies every family shares
fleet        live servers by family with background traffic (tests/reliability)
families/    one module per family: its reliability case, soak workload and compose smoke call
soak         the soak run (`make soak`, tests/reliability/test_soak.py)
replicas     replicas of one service on loopback addresses, behind one DNS name
load         closed-loop load through the SDK
"""
