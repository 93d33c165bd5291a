# The SLURM profile's two hooks (docs/cluster.md); the logic is layerbound.plan.cluster.
# 1. A cluster's own sizes: the file named by $LAYERBOUND_SLURM_RESOURCES is laid over the profile's
#    set-threads / set-resources before any rule is defined, so the rules and the jobs' own Snakemake
#    (which gets them as --set-threads / --set-resources) see the same values.
# 2. Before the first submission: every rule's request against the nodes sinfo lists.
import os
import sys

from snakemake.resources import Resource, Resources

from layerbound.plan import cluster as lb_cluster

CLUSTER_RESOURCES = {}
if os.environ.get(lb_cluster.RESOURCES_VARIABLE):
    try:
        CLUSTER_RESOURCES = lb_cluster.load_resources(os.environ[lb_cluster.RESOURCES_VARIABLE])
    except lb_cluster.ClusterMisfit as err:
        sys.exit(f"layerbound: {err}")
    # Snakemake (9.x) has no public call for this: its parsed --set-resources / --set-threads maps,
    # read when a rule is defined and passed on to each job, are updated in place (checked by
    # tests/test_slurm.py, test_a_cluster_file_sizes_the_jobs_over_the_profile).
    _overwrite = workflow.resource_settings._parsed_overwrite_resources
    for _rule, _entry in CLUSTER_RESOURCES.items():
        _threads, _resources = lb_cluster.snakemake_resources(_entry)
        _overwrite.setdefault(_rule, Resources()).update(
            Resources.parse([f"{k}={v}" for k, v in _resources.items()], allow_expressions=True))
        if _threads is not None:
            workflow.resource_settings._parsed_overwrite_threads[_rule] = Resource("_cores", _threads)


def cluster_requests():
    """What each rule's jobs of this run would ask SLURM for (jobs on the submitting node excluded)."""
    return lb_cluster.largest_per_rule(
        lb_cluster.job_request(job.rule.name, dict(job.resources.items()), job.threads)
        for job in workflow.dag.needrun_jobs() if not job.is_local)


onstart:
    plugin = workflow.executor_plugin
    if plugin is not None and plugin.name == "slurm":
        try:
            unknown = lb_cluster.unknown_rules(CLUSTER_RESOURCES, {rule.name for rule in workflow.rules})
            if unknown:
                raise lb_cluster.ClusterMisfit(f"${lb_cluster.RESOURCES_VARIABLE} sizes unknown rules: "
                                               f"{', '.join(unknown)}")
            lb_cluster.preflight(cluster_requests(), lb_cluster.read_nodes(),
                                 workflow.executor_settings.status_command, lb_cluster.read_min_job_age())
        except lb_cluster.ClusterMisfit as err:
            sys.exit(f"layerbound: {err}")
