"""Closed-loop evaluation in the gym-aloha simulator (`python -m cosmos_jax.eval.aloha_sim`) and in LIBERO
(`python -m cosmos_jax.eval.libero_sim`).

  episode.py     one episode as the official ALOHA client runs it (observation preprocessing, the action queue)
  policies.py    what can be evaluated: a converted checkpoint, the tiny policy, a server, a demonstration replay
  evaluation.py  episodes over seeds, their files and summary.json; `run`, the ALOHA command as a function
  report.py      per-episode MP4 and value plot
  rollout.py     the ALOHA rollout HDF5 (planning-model data)
  aloha_sim.py   the ALOHA command (absl flags, configs/eval/aloha.py)
  libero_sim_eval.py   the official LIBERO loop, its outputs, its policies; `run`, the LIBERO command as a function
  libero_sim_env.py, libero_sim_worker.py   the LIBERO simulator in its own environment (a subprocess)
  libero_sim.py  the LIBERO command (absl flags, configs/eval/libero.py)
  command.py     the `main` both commands share (the --checkpoint/--step/--use_ema shorthands, exit status 2)

The command modules define absl flags when imported, so nothing else imports them. The ALOHA simulator itself
(tasks, cameras, control rate) is `cosmos_jax.data.simulator`, shared with the demonstration generator.
"""
