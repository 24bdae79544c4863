from django.apps import AppConfig


class DiscoveryConfig(AppConfig):
    name = "discovery"

    def ready(self) -> None:
        # Imported here: the modules import models, which are ready only now.
        from discovery import frames, runs, schedules
        from instances.election import leader_changed
        from instances.frames import frame_handlers
        from instances.services import socket_opened
        from inventory.seeds import seeds_written
        from inventory.services import results_run
        from sites.services import site_removed, site_schedule_changed

        frame_handlers.register("discovery_progress", frames.handle_progress)
        frame_handlers.register("discovery_complete", frames.handle_complete)
        # Runs follow the leadership: pending runs go to a new leader, running ones are dispatched again.
        leader_changed.subscribe(runs.on_leader_change)
        # A leader's socket that (re)opens gets the runs sent to it while it had none.
        socket_opened.subscribe(runs.on_socket_opened)
        # Discovery results posted with a runId or seedId count on their run.
        results_run.provide(runs.results_run)
        # Each seed's own schedule is a beat entry that follows the seed's writes.
        seeds_written.subscribe(schedules.on_seeds_written)
        # A site's discovery schedule is a beat entry that follows the site's writes.
        site_schedule_changed.subscribe(schedules.site_schedule_sync)
        site_removed.subscribe(schedules.site_schedules_remove)
