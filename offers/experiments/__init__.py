"""Online experiments, the analyst's side: the report, off-policy estimates, the simulator.

Assignment and the logging policy live in serving (serving/experiments.py, serving/arms.py);
this package reads what was logged (`analysis`: pure numbers; `report`: reading, MLflow,
outputs) and simulates experiments on synthetic users (`simworld`, `simulate`).
"""
