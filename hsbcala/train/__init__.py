"""train: one training, planned then run.

``plan`` (checks, data step, warm start, the engine command; the login-node preflight), ``run`` (lock, engine,
tracking, clean-up: ``python train.py``) and ``newchars`` (new letters from base letters). The top wing: it may
import every other one, and none imports it.
"""
