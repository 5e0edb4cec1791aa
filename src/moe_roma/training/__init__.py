"""What every trained run shares, whichever method or builder trains: the resumable state, the run
folder, the experiment trackers, the routing monitor and the learning-rate and lambda schedules."""
