"""kube-proxy in nftables mode, and the three modes compared, from Python."""

import podnet


def test_nftables_mode_lists_its_table_and_traces_through_its_maps():
    c = podnet.Cluster.seed(proxy_mode="nftables")
    listing = c.nft_list_ruleset("node1")
    assert listing.startswith('table ip kube-proxy {\n\tcomment "rules for kube-proxy"\n')
    assert "10.96.0.10 . tcp . 80 : goto service-" in listing
    assert "KUBE-" not in c.iptables_save("node1")
    t = c.trace("pod/default/pod2", "svc/default/web:http")
    assert t.completed, t.render()
    maps = [h for h in t.hops if h.table == "ip kube-proxy" and h.chain == "services"]
    assert maps and maps[0].origin == "svc/default/web:http", t.render()
    # An iptables-mode cluster has no nf_tables rules.
    assert podnet.Cluster.seed().nft_list_ruleset("node1") == ""


def test_compare_modes_finds_the_cluster_ip_port_the_service_lacks():
    c = podnet.Cluster.seed()
    diffs = c.compare_modes([("pod/default/pod2", "10.96.0.10:81", "tcp"), ("pod/default/pod1", "svc/default/web:http", None)])
    assert [(d["from"], d["to"]) for d in diffs] == [("pod/default/pod2", "10.96.0.10:81")]
    out = diffs[0]["outcomes"]
    assert out["iptables"][0]["disposition"] == "dropped"
    assert out["nftables"][0]["disposition"] == "rejected"
    assert out["ipvs"][0]["disposition"] == "rejected"
    nft = [d for d in diffs[0]["divergences"] if d["modes"] == ("iptables", "nftables")][0]
    assert "cluster-ips-check" in nft["hops"][1]
    assert "iptables and nftables part at" in diffs[0]["text"]
    # Every pod against every Service port: the same in all three modes.
    assert c.compare_modes() == []
