package csfake

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// job is an async job. It runs (its effect happens) at the poll after
// pollsLeft reaches zero, as CloudStack's job executes after it is queued.
type job struct {
	id        string
	cmd       string // Java class, as queryAsyncJobResult reports it
	vmID      string
	created   time.Time
	pollsLeft int
	run       func() (any, *apiError)
	fail      *apiError

	status     int // 0 pending, 1 succeeded, 2 failed
	resultCode int
	result     any
}

func (s *Server) newJob(command, class, vmID string, run func() (any, *apiError)) map[string]any {
	j := &job{id: NewUUID(), cmd: class, vmID: vmID, created: time.Now(), pollsLeft: s.opts.JobPolls, run: run}
	if e := s.failJob[command]; e != nil {
		delete(s.failJob, command)
		j.fail = e
	}
	s.jobs[j.id] = j
	return map[string]any{"jobid": j.id}
}

func (s *Server) queryJob(p url.Values) (any, *apiError) {
	j := s.jobs[p.Get("jobid")]
	if j.status == 0 {
		if j.pollsLeft > 0 {
			j.pollsLeft--
		} else {
			var out any
			e := j.fail
			if e == nil {
				out, e = j.run()
			}
			if e != nil {
				j.status, j.resultCode = 2, e.Code
				body := map[string]any{"uuidList": []string{}, "errorcode": e.Code, "errortext": e.Text}
				if e.CSCode != 0 {
					body["cserrorcode"] = e.CSCode
				}
				j.result = body
			} else {
				j.status, j.result = 1, out
			}
		}
	}
	r := map[string]any{
		"jobid": j.id, "cmd": j.cmd, "created": j.created.Format("2006-01-02T15:04:05-0700"),
		"jobstatus": j.status, "jobprocstatus": 0, "jobresultcode": j.resultCode,
		"jobinstancetype": "VirtualMachine", "jobinstanceid": j.vmID,
	}
	if j.status != 0 {
		r["jobresulttype"] = "object"
		r["jobresult"] = j.result
	}
	return r, nil
}

func (s *Server) addNic(p url.Values) (any, *apiError) {
	vmID, netID := p.Get("virtualmachineid"), p.Get("networkid")
	ip, mac := p.Get("ipaddress"), strings.ToLower(p.Get("macaddress"))
	return s.newJob("addNicToVirtualMachine", "org.apache.cloudstack.api.command.user.vm.AddNicToVMCmd", vmID, func() (any, *apiError) {
		vm, net := s.vms[vmID], s.networks[netID]
		if vm == nil {
			return nil, &apiError{Code: 530, CSCode: csRuntime, Text: "Virtual machine id does not exist"}
		}
		if net == nil {
			return nil, &apiError{Code: 431, CSCode: csInvalidVal, Text: "unable to find a network with id " + netID}
		}
		if z := s.zones[vm.ZoneID]; z != nil && strings.EqualFold(z.NetworkType, "Basic") {
			return nil, &apiError{Code: 530, Text: fmt.Sprintf("Zone %s, has a NetworkType of Basic. Can't add a new NIC to a VM on a Basic Network", vm.ZoneID)}
		}
		if net.ZoneID != vm.ZoneID {
			return nil, &apiError{Code: 431, Text: fmt.Sprintf("Network %s is not in the same zone as VM %s", net.ID, vm.InstanceName)}
		}
		for _, n := range vm.Nics {
			if n.NetworkID == net.ID {
				return nil, &apiError{Code: 530, Text: fmt.Sprintf("A NIC already exists for VM:%s in network: %s", vm.InstanceName, net.ID)}
			}
		}
		if mac != "" {
			for _, other := range s.vms {
				for _, n := range other.Nics {
					if n.NetworkID == net.ID && n.MAC == mac {
						return nil, &apiError{Code: 530, CSCode: csRuntime, Text: "A NIC with this MAC address exists for network: " + net.ID}
					}
				}
			}
		}
		for _, other := range s.vms {
			for _, n := range other.Nics {
				if other.ID != vm.ID && other.Name == vm.Name && n.NetworkID == net.ID {
					return nil, &apiError{Code: 530, CSCode: csRuntime, Text: fmt.Sprintf("Network %s already has a vm with host name: %s", net.Name, vm.Name)}
				}
			}
		}
		plan := s.plans[[2]string{vmID, netID}]
		if ip == "" {
			ip = plan.IP
		}
		if mac == "" {
			mac = plan.MAC
		}
		if mac == "" {
			mac = s.newMAC()
		}
		pfx := netip.MustParsePrefix(net.CIDR).Masked()
		used := s.usedIPs(net.ID)
		if ip == "" {
			for a := pfx.Addr().Next(); pfx.Contains(a); a = a.Next() {
				if !used[a.String()] && a.String() != net.Gateway {
					ip = a.String()
					break
				}
			}
		} else if a, err := netip.ParseAddr(ip); err != nil || !pfx.Contains(a) {
			return nil, &apiError{Code: 431, Text: fmt.Sprintf("Invalid format for IP address parameter: %s", ip)}
		}
		if ip == "" || used[ip] || ip == net.Gateway {
			return nil, &apiError{Code: 533, Text: fmt.Sprintf("Unable to acquire Guest IP address for network %s", net.ID)}
		}
		dev := 0
		for _, n := range vm.Nics {
			if n.DeviceID >= dev {
				dev = n.DeviceID + 1
			}
		}
		vm.Nics = append(vm.Nics, Nic{ID: NewUUID(), NetworkID: net.ID, MAC: mac, IP: ip, DeviceID: dev})
		return map[string]any{"virtualmachine": s.vmJSON(vm)}, nil
	}), nil
}

func (s *Server) usedIPs(networkID string) map[string]bool {
	used := map[string]bool{}
	for _, vm := range s.vms {
		for _, n := range vm.Nics {
			if n.NetworkID == networkID {
				used[n.IP] = true
				for _, x := range n.Secondary {
					used[x.IP] = true
				}
			}
		}
	}
	return used
}

func (s *Server) removeNic(p url.Values) (any, *apiError) {
	vmID, nicID := p.Get("virtualmachineid"), p.Get("nicid")
	vm := s.vms[vmID]
	found := false
	for _, n := range vm.Nics {
		found = found || n.ID == nicID
	}
	if !found {
		return nil, invalidValue("removenicfromvirtualmachine", "nicid", nicID)
	}
	return s.newJob("removeNicFromVirtualMachine", "org.apache.cloudstack.api.command.user.vm.RemoveNicFromVMCmd", vmID, func() (any, *apiError) {
		vm := s.vms[vmID]
		if vm == nil {
			return nil, &apiError{Code: 530, CSCode: csRuntime, Text: "Virtual machine id does not exist"}
		}
		for i, n := range vm.Nics {
			if n.ID != nicID {
				continue
			}
			if n.IsDefault {
				return nil, &apiError{Code: 431, Text: fmt.Sprintf("Unable to remove nic from %s in %s, nic is default.", vm.InstanceName, n.NetworkID)}
			}
			vm.Nics = append(vm.Nics[:i], vm.Nics[i+1:]...)
			return map[string]any{"virtualmachine": s.vmJSON(vm)}, nil
		}
		return nil, &apiError{Code: 431, Text: fmt.Sprintf("Unable to find nic %s", nicID)}
	}), nil
}

// findNic returns the VM and NIC with nicID.
func (s *Server) findNic(nicID string) (*VM, *Nic) {
	for _, vm := range s.vms {
		for i := range vm.Nics {
			if vm.Nics[i].ID == nicID {
				return vm, &vm.Nics[i]
			}
		}
	}
	return nil, nil
}

// addIP is addIpToNic: an async job that gives the NIC a secondary IP on
// its network, the one asked for or the next free one.
func (s *Server) addIP(p url.Values) (any, *apiError) {
	nicID, ip := p.Get("nicid"), p.Get("ipaddress")
	vm, _ := s.findNic(nicID)
	return s.newJob("addIpToNic", "org.apache.cloudstack.api.command.user.vm.AddIpToVmNicCmd", vm.ID, func() (any, *apiError) {
		_, nic := s.findNic(nicID)
		if nic == nil {
			return nil, invalidValue("addiptonic", "nicid", nicID)
		}
		net := s.networks[nic.NetworkID]
		pfx := netip.MustParsePrefix(net.CIDR).Masked()
		used := s.usedIPs(net.ID)
		if ip == "" {
			for a := pfx.Addr().Next(); pfx.Contains(a); a = a.Next() {
				if !used[a.String()] && a.String() != net.Gateway {
					ip = a.String()
					break
				}
			}
		} else if a, err := netip.ParseAddr(ip); err != nil || !pfx.Contains(a) {
			return nil, &apiError{Code: 431, CSCode: csInvalidVal, Text: fmt.Sprintf("Invalid IP address %s: not in the network's CIDR %s", ip, pfx)}
		}
		if ip == "" {
			return nil, &apiError{Code: 533, Text: "Unable to allocate secondary IP for network " + net.ID}
		}
		if used[ip] || ip == net.Gateway {
			return nil, &apiError{Code: 530, CSCode: csRuntime, Text: fmt.Sprintf("IP address %s is already in use in network %s", ip, net.Name)}
		}
		x := SecondaryIP{ID: NewUUID(), IP: ip}
		nic.Secondary = append(nic.Secondary, x)
		return map[string]any{"nicsecondaryip": map[string]any{"id": x.ID, "ipaddress": x.IP, "nicid": nic.ID, "networkid": net.ID, "virtualmachineid": vm.ID}}, nil
	}), nil
}

// removeIP is removeIpFromNic: an async job removing a secondary IP by its
// id.
func (s *Server) removeIP(p url.Values) (any, *apiError) {
	id := p.Get("id")
	var vmID string
	for _, vm := range s.vms {
		for _, n := range vm.Nics {
			for _, x := range n.Secondary {
				if x.ID == id {
					vmID = vm.ID
				}
			}
		}
	}
	if vmID == "" {
		return nil, invalidValue("removeipfromnic", "id", id)
	}
	return s.newJob("removeIpFromNic", "org.apache.cloudstack.api.command.user.vm.RemoveIpFromVmNicCmd", vmID, func() (any, *apiError) {
		for _, vm := range s.vms {
			for i := range vm.Nics {
				n := &vm.Nics[i]
				for j, x := range n.Secondary {
					if x.ID == id {
						n.Secondary = append(n.Secondary[:j], n.Secondary[j+1:]...)
						return map[string]any{"success": true}, nil
					}
				}
			}
		}
		return nil, &apiError{Code: 431, CSCode: csInvalidVal, Text: "Unable to find secondary ip address by id"}
	}), nil
}
