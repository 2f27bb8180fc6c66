/*
 * fdvm's MSI-X mask/unmask/retarget protocol on the kernel (KVM_IRQFD) path,
 * for one vector, checked exhaustively by spin (see check.sh, README.md).
 *
 * Processes:
 *   backend      writes the vector's eventfd at any moment, up to NSIG times
 *   guest        masks/unmasks the vector, toggles MSI-X enable and the
 *                function mask, retargets (address/data rewrite = route
 *                update, also while assigned), reads the PBA; up to NOPS
 *                MMIO accesses. Its handlers run fdvm's code, step by step.
 *   kvm_inject   KVM's irqfd->inject work item (irqfd_inject)
 *   final        the end-state checks, once everything else is done
 *
 * Each step of fdvm's code names the function it mirrors; KVM's steps name
 * virt/kvm/eventfd.c (Linux >= 5.11, with irqfd_wakeup draining the count)
 * and fs/eventfd.c. A Promela atomic step is one critical section of the
 * real thing: eventfd operations are atomic under the eventfd's wqh.lock
 * (a write runs irqfd_wakeup under that lock), KVM's irqfd list and route
 * updates under irqfds.lock/SRCU. fdvm's m->lock (msix.c) and l->lock
 * (irqfd.c) serialise all guest handlers, so one guest process suffices;
 * everything inside a handler interleaves with the backend and KVM.
 *
 * Properties (assertions, checked in every reachable state):
 *   - never spurious: no delivery while the guest has the vector masked;
 *     deliveries <= backend signals
 *   - a delivery uses the address/data the guest has programmed (or, during
 *     the retarget write itself, the old or the new one)
 *   - PBA exact, as far as timing can tell: a PBA read while masked
 *     returns 0 only if no backend signal came after the last delivery
 *     (nothing is hidden from the guest), and 1 only if a signal came after
 *     the mask write began (no stale bit from before the mask); while
 *     unmasked it reads 0. It cannot be "1 iff a signal came after the last
 *     delivery": a signal s1 that KVM took just before unhooking (queued to
 *     irqfd->inject) may be injected after a signal s2 that came just after
 *     the unhook — s2's message was not sent, its bit is set, yet a delivery
 *     followed s2 in time (the first version of this model asserted that
 *     and spin found exactly this interleaving)
 *   - never lost (at the end, all processes done, KVM's work flushed): a
 *     signal after the last delivery ("uncovered") implies the vector is
 *     masked and its pending bit reads 1 — unmasking would deliver it; and
 *     the pending bit is never set without a signal since the mask began
 *
 * Variants (each must FAIL the check; see check.sh):
 *   -DBROKEN_NO_RESIGNAL    unmask does not write the count for the pending
 *                           bit: a signal folded into the pending bit by a
 *                           PBA read is lost at unmask
 *   -DBROKEN_NO_DEASSIGN    mask does not deassign the irqfd: a signal while
 *                           masked is delivered (spurious)
 *   -DBROKEN_KVM_NO_CONSUME KVM's deassign does not consume the count (the
 *                           2010 race): the count KVM already injected at
 *                           assign reappears as a pending bit, PBA wrong and
 *                           a second delivery at unmask
 *   -DKVM_PRE_5_11          irqfd_wakeup does not drain the count (Linux
 *                           before 5.11): a signal between KVM's hook and its
 *                           pending-at-assign check is injected twice
 */

#ifndef NSIG
#define NSIG 4		/* backend signals */
#endif
#ifndef NOPS
#define NOPS 8		/* guest MMIO accesses */
#endif
#ifndef NROUTE
#define NROUTE 2	/* retargets (route versions 0..NROUTE) */
#endif

/* ---- the eventfd (fs/eventfd.c) ---- */
byte count;		/* ctx->count; bounded by NSIG + resignals */

/* ---- KVM's irqfd (virt/kvm/eventfd.c struct kvm_kernel_irqfd) ---- */
bool hooked;		/* irqfd->wait on the eventfd's wait queue */
bool k_active;		/* on kvm->irqfds.items (irqfd_is_active) */
bool inject_work;	/* irqfd->inject queued (schedule_work) */
byte kvm_route;		/* the MSI route KVM has for the line's GSI */

/* ---- fdvm's line (lib/kvm/irqfd.c struct fdvm_irq_line) ---- */
bool l_masked = true;	/* created masked: msix.c:fdvm_msix_init lc.masked */
bool l_pending;
bool l_assigned;

/* ---- fdvm's MSI-X state (lib/pci/msix.c struct fdvm_msix/msix_entry) ---- */
bool msix_en = true;	/* MSI-X enable (the guest driver has set it) */
bool fmask;		/* function mask (PCI_MSIX_MASKALL) */
bool ctrl_masked = true;	/* entry's vector control mask bit */
bool e_masked = true;	/* msix_entry.masked: what the line has now */
byte e_route;		/* entry's address/data, as a version */

/* ---- ghosts ---- */
byte signals;		/* backend writes */
byte deliveries;	/* interrupts injected into the guest */
bool uncovered;		/* a signal came after the last delivery */
bool sig_in_mask;	/* a signal came since the last mask write began */
bool gmasked = true;	/* the vector is masked as the guest sees it */
byte g_route;		/* address/data the guest has programmed */
byte g_route_new;	/* during a retarget write: the new one */
bool g_writing;		/* a retarget write is in progress */
bool guest_done, backend_done;

/* An interrupt reaches the guest through KVM's current route. */
inline deliver()
{
	assert(!gmasked);			/* never spurious: not while masked */
	deliveries++;
	assert(deliveries <= signals);		/* never more than signalled */
	assert(kvm_route == g_route || (g_writing && kvm_route == g_route_new));
	uncovered = false
}

/*
 * fs/eventfd.c:eventfd_write: count += 1 and, under the same wqh.lock,
 * wake_up_locked_poll(EPOLLIN) -> virt/kvm/eventfd.c:irqfd_wakeup if hooked.
 * Call inside atomic.
 */
inline eventfd_write()
{
	count++;
	if
	:: hooked ->
#ifndef KVM_PRE_5_11
		count = 0;	/* irqfd_wakeup: eventfd_ctx_do_read */
#endif
		/* irqfd_wakeup: kvm_arch_set_irq_inatomic with the irqfd's
		 * route snapshot, or schedule_work(inject) when it cannot
		 * (-EWOULDBLOCK) or the irqfd is deactivated */
		if
		:: k_active -> deliver()
		:: inject_work = true
		fi
	:: else -> skip
	fi
}

/* irqfd.c:fold_pending (line lock held): fdvm_eventfd_drain reads the
 * count, non-blocking; a count is a signal since the deassign. */
inline fold_pending()
{
	if
	:: l_masked && count > 0 -> l_pending = true; count = 0
	:: else -> skip
	fi
}

/* irqfd.c:fdvm_irq_line_mask, kernel path, called with !l->masked */
inline line_mask()
{
	/* irqfd.c:irqfd_deassign */
	l_assigned = false;
#ifndef BROKEN_NO_DEASSIGN
	/* ioctl(KVM_IRQFD, DEASSIGN) = virt/kvm/eventfd.c:kvm_irqfd_deassign:
	 * irqfd_deactivate under irqfds.lock (list_del_init) */
	k_active = false;
	/* ... then flush_workqueue(irqfd_cleanup_wq) runs irqfd_shutdown:
	 * eventfd_ctx_remove_wait_queue reads (consumes) the count and
	 * unhooks, under wqh.lock */
	atomic {
		hooked = false;
#ifndef BROKEN_KVM_NO_CONSUME
		count = 0
#endif
	}
	/* irqfd_shutdown: flush_work(&irqfd->inject) */
	(!inject_work);
#endif
	l_masked = true;
	atomic { fold_pending() }
}

/* irqfd.c:fdvm_irq_line_unmask, kernel path, called with l->masked;
 * ret 0 or EBUSY (KVM_IRQFD on an eventfd that is already bound) */
inline line_unmask()
{
	ret = 0;
#ifndef BROKEN_NO_RESIGNAL
	/* "One count for the pending bit": fdvm_eventfd_signal */
	if
	:: l_pending -> atomic { eventfd_write() }
	:: else -> skip
	fi;
#endif
	/* irqfd.c:irqfd_assign: fdvm_gsi_sync writes nothing (set_msi wrote
	 * the route at once); ioctl(KVM_IRQFD) = kvm_irqfd_assign: */
	if
	:: hooked -> ret = 1	/* only with BROKEN_NO_DEASSIGN: -EBUSY */
	:: else ->
		/* kvm_irqfd_register under irqfds.lock: irqfd_update (route
		 * snapshot), list_add_tail, add_wait_queue_priority */
		atomic { k_active = true; hooked = true };
		/* vfs_poll -> eventfd_poll reads the count (not consuming it):
		 * "Check if there was an event already pending on the eventfd
		 * before we registered": schedule_work(&irqfd->inject) */
		atomic {
			if
			:: count > 0 -> inject_work = true
			:: else -> skip
			fi
		};
		l_assigned = true;
		l_masked = false;
		l_pending = false
	fi
}

/* msix.c:sync_vector, m->lock held: bring the line in line with nm */
inline sync_vector()
{
	if
	:: nm && !e_masked -> line_mask(); e_masked = true
	:: !nm && e_masked ->
		line_unmask();
		if
		:: ret == 0 -> e_masked = false
		:: else -> skip	/* "unmask failed" is logged; stays masked */
		fi
	:: else -> skip
	fi
}

/* The guest-visible mask changes when the MMIO write takes effect: an
 * unmask at its start (a delivery during the unmask write is fine), a mask
 * at its end (deliveries before the vCPU resumes are fine). */
inline write_begin()
{
	nm = !msix_en || fmask || ctrl_masked;
	if
	:: !nm -> gmasked = false
	:: nm && !gmasked -> sig_in_mask = false	/* a mask write begins */
	:: else -> skip
	fi
}

inline write_end()
{
	gmasked = nm;
	assert(e_masked == l_masked)
}

active proctype backend()
{
	do
	:: signals < NSIG ->
		atomic { signals++; uncovered = true; sig_in_mask = true; eventfd_write() }
	:: break
	od;
	backend_done = true
}

/* virt/kvm/eventfd.c:irqfd_inject: kvm_set_irq on the GSI, i.e. through the
 * routing table KVM has now. Runs whenever the work is queued. */
active proctype kvm_inject()
{
end:
	do
	:: atomic { inject_work -> inject_work = false; deliver() }
	od
}

active proctype guest()
{
	byte ops;
	bool nm, pb;
	byte ret;

	do
	:: ops < NOPS ->
		ops++;
		if
		:: /* table write, vector control: msix.c:fdvm_msix_bar_write
		    * case 3: e->ctrl = w & CTRL_MASKED; sync_vector */
			atomic { ctrl_masked = !ctrl_masked; write_begin() };
			sync_vector();
			write_end()
		:: /* config write of the MSI-X control word, toggling the
		    * function mask or the enable: msix.c:fdvm_msix_control */
			atomic {
				if
				:: fmask = !fmask
				:: msix_en = !msix_en
				fi;
				write_begin()
			};
			sync_vector();
			write_end()
		:: g_route < NROUTE ->
			/* table write of address/data (one qword, or the data
			 * dword alone), masked or not: msix.c:fdvm_msix_bar_write
			 * case 0-2 -> irqfd.c:fdvm_irq_line_set_msi -> gsi.c:
			 * fdvm_gsi_set_msi -> maybe_write -> write_table */
			atomic {
				nm = !msix_en || fmask || ctrl_masked;
				g_route_new = g_route + 1;
				g_writing = true;
				e_route = g_route_new
			};
			/* KVM_SET_GSI_ROUTING: kvm_set_irq_routing swaps the
			 * table, kvm_irq_routing_update -> irqfd_update for the
			 * active irqfd, synchronize_srcu: no delivery on the old
			 * route once the ioctl returns */
			kvm_route = e_route;
			/* l->msi = *msg; then sync_vector: mask unchanged */
			sync_vector();
			atomic { g_route = g_route_new; g_writing = false };
			write_end()
		:: /* PBA read: msix.c:fdvm_msix_bar_read: the bit is
		    * e->masked && fdvm_irq_line_pending (fold_pending) */
			atomic {
				if
				:: e_masked -> fold_pending(); pb = l_pending
				:: else -> pb = false
				fi;
				if
				:: gmasked ->			/* PBA exact */
					assert(pb || !uncovered);
					assert(!pb || sig_in_mask)
				:: else -> assert(!pb)
				fi
			}
		fi
	:: break
	od;
	guest_done = true
}

/* The end: all done, KVM's queued work run. */
active proctype final()
{
	bool pb;

	(guest_done && backend_done && !inject_work);
	atomic {
		/* the PBA as the guest would read it now */
		if
		:: e_masked -> fold_pending(); pb = l_pending
		:: else -> pb = false
		fi;
		/* never lost: a signal after the last delivery is still pending
		 * in a masked vector (unmasking delivers it) */
		assert(!uncovered || (gmasked && pb));
		/* and the pending bit is never set without a signal since
		 * the mask */
		assert(!pb || (gmasked && sig_in_mask))
	}
}
