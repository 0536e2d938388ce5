"""Training the InfraMind policy: RLlib env, constrained PPO, export to the numpy runtime."""
