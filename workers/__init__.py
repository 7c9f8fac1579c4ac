"""What runs on a worker: tasks (data + noise + architecture) and inner trainers.

Imports `losses`; only `workers.ray_actors` imports ray.
"""
