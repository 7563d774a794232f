"""Mazes, the 4abs-cc mechanism, the BFS expert, maze->graph conversion and the data-set files."""
