"""Closed-loop evaluation in the gym-aloha simulator (`python -m cosmos_jax.eval.aloha_sim`).

  episode.py     one episode as the official ALOHA client runs it (observation preprocessing, the action queue)
  policies.py    what can be evaluated: a converted checkpoint, the tiny policy, a server, a demonstration replay
  evaluation.py  episodes over seeds, their files and summary.json
  report.py      per-episode MP4 and value plot
  rollout.py     the ALOHA rollout HDF5 (planning-model data)
  aloha_sim.py   the command (absl flags, configs/eval/aloha.py)

The simulator itself (tasks, cameras, control rate) is `cosmos_jax.data.simulator`, shared with the demonstration
generator.
"""
