"""Backends carry out a LaunchPlan; they never import the worker or decide training settings."""
