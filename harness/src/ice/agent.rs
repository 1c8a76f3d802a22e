//! A full ICE agent (RFC 8445) for one media stream (RTP, and RTCP as a second component when
//! the phone offers it), as a sans-IO machine:
//! connectivity checks with STUN short-term credentials, triggered checks, peer-reflexive
//! candidates, role conflicts, regular nomination, and consent freshness (RFC 7675) on the
//! selected pair. It never opens a socket or reads the clock: checks leave as [`Transmit`]s whose
//! `source` is the *base* of the local candidate (the host socket, or a TURN relayed address that
//! the caller sends through its allocation), answers come in through [`IceAgent::handle_stun`].
//!
//! Simplifications, each harmless with one stream: every pair starts Waiting
//! (the frozen algorithm only orders foundations across streams), a check in progress is not
//! cancelled by a triggered one, and the check list is not pruned of pairs a valid one makes
//! redundant.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::candidate::{pair_priority, priority, Candidate, CandidateKind, IceDescription};
use crate::machine::Transmit;
use crate::rtp::SplitMix;
use crate::stun::attribute::attr_type;
use crate::stun::codec::{Attribute, Class, Message, Method, TransactionId};

/// The agent's timers. RFC 8445's defaults are for the internet; a test scales them.
#[derive(Debug, Clone)]
pub struct IceConfig {
    /// Ta: one check leaves per interval (RFC 8445 §14.2: 50 ms).
    pub pacing: Duration,
    /// First retransmission timeout of a check; doubles per retransmission.
    pub rto: Duration,
    /// Transmissions of a check before its pair fails.
    pub max_transmissions: u32,
    /// How long the controlling agent waits after the first valid pair for a better one before
    /// it nominates the best it has (regular nomination leaves this to the agent).
    pub nomination_wait: Duration,
    /// Consent checks on the selected pair, about this often (RFC 7675 §5.1: 5 s, ±20 %).
    pub consent_interval: Duration,
    /// No consent answer for this long: stop sending (RFC 7675: 30 s).
    pub consent_timeout: Duration,
    /// Seeds credentials, tie-breaker and transaction ids.
    pub seed: u64,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            pacing: Duration::from_millis(50),
            rto: Duration::from_millis(250),
            max_transmissions: 5,
            nomination_wait: Duration::from_millis(300),
            consent_interval: Duration::from_secs(5),
            consent_timeout: Duration::from_secs(30),
            seed: crate::stun::os_seed(),
        }
    }
}

/// Who nominates (RFC 8445 §6.1.1): the offerer is controlling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Controlling,
    Controlled,
}

/// A candidate pair's state (RFC 8445 §6.1.2.6), less Frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

/// A local and a remote candidate, checked together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub local: Candidate,
    pub remote: Candidate,
    pub priority: u64,
    pub state: PairState,
    /// A check proved it works both ways (it is on the valid list).
    pub valid: bool,
    pub nominated: bool,
    /// Controlled: the peer's check on it carried USE-CANDIDATE.
    remote_nominated: bool,
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceEvent {
    /// A check succeeded: the pair works both ways.
    Valid { local: Candidate, remote: Candidate },
    /// The pair media goes over from now on.
    Selected { local: Candidate, remote: Candidate },
    /// A role conflict was resolved by taking the other role (RFC 8445 §7.3.1.1).
    RoleChanged(Role),
    /// Every pair failed: no path.
    Failed,
    /// The selected pair's consent expired (RFC 7675 §5.1): media must stop.
    ConsentLost { local: Candidate, remote: Candidate },
}

#[derive(Debug)]
struct Check {
    pair: usize,
    payload: Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
    transmissions: u32,
    rto: Duration,
    next: Instant,
    nominate: bool,
    consent: bool,
    /// The PRIORITY it carried: a peer-reflexive local candidate it finds gets this one.
    priority: u32,
}

#[derive(Debug, Clone, Copy)]
struct Consent {
    next: Instant,
    last_answer: Instant,
}

/// The agent (see the module docs).
#[derive(Debug)]
pub struct IceAgent {
    config: IceConfig,
    role: Role,
    tie_breaker: u64,
    local: IceDescription,
    remote: Option<IceDescription>,
    remote_candidates: Vec<Candidate>,
    pairs: Vec<Pair>,
    checks: HashMap<TransactionId, Check>,
    triggered: VecDeque<(usize, bool)>,
    next_check: Option<Instant>,
    /// Per component: when its first pair became valid, the pair being nominated, the pair
    /// selected.
    first_valid: BTreeMap<u8, Instant>,
    /// When the last paced check left: nomination waits until the list has been sent and had
    /// time to answer.
    last_check: Option<Instant>,
    nominating: BTreeMap<u8, usize>,
    selected: BTreeMap<u8, usize>,
    consent: Option<Consent>,
    failed: bool,
    rng: SplitMix,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl IceAgent {
    /// An agent with the candidates gathered for it (host, server-reflexive, relayed) and fresh
    /// credentials; it checks once [`IceAgent::set_remote`] gives the peer's.
    pub fn new(config: IceConfig, candidates: Vec<Candidate>, role: Role) -> Self {
        let mut rng = SplitMix(config.seed);
        let mut text = |n: usize| -> String {
            (0..n)
                .map(|_| ALNUM[(rng.next_u64() % ALNUM.len() as u64) as usize] as char)
                .collect()
        };
        // RFC 8839 §5.4: ufrag ≥ 4 characters, pwd ≥ 22.
        let (ufrag, pwd) = (text(8), text(24));
        let tie_breaker = rng.next_u64();
        IceAgent {
            config,
            role,
            tie_breaker,
            local: IceDescription {
                ufrag,
                pwd,
                candidates,
                lite: false,
            },
            remote: None,
            remote_candidates: Vec::new(),
            pairs: Vec::new(),
            checks: HashMap::new(),
            triggered: VecDeque::new(),
            next_check: None,
            first_valid: BTreeMap::new(),
            last_check: None,
            nominating: BTreeMap::new(),
            selected: BTreeMap::new(),
            consent: None,
            failed: false,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// An agent for a new session of a phone whose SDP keeps offering `local` (the harness's
    /// phone writes its ICE attributes once, when it starts): same credentials and gathered
    /// candidates, nothing learnt from the previous peer.
    pub fn renewed(&self) -> Self {
        let mut local = self.local.clone();
        local
            .candidates
            .retain(|c| c.kind != CandidateKind::PeerReflexive);
        let mut config = self.config.clone();
        config.seed = config.seed.wrapping_add(1);
        let mut agent = IceAgent::new(config, local.candidates.clone(), self.role);
        agent.local = local;
        agent
    }

    /// Whether it has been given a peer (a session ran or runs).
    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The peer's ufrag in the session it runs.
    pub fn remote_ufrag(&self) -> Option<&str> {
        self.remote.as_ref().map(|r| r.ufrag.as_str())
    }

    /// What our SDP says: credentials and candidates.
    pub fn local_description(&self) -> &IceDescription {
        &self.local
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// The pair RTP goes over (component 1), once nominated.
    pub fn selected(&self) -> Option<&Pair> {
        self.selected_for(1)
    }

    /// The pair component `component` goes over, once nominated.
    pub fn selected_for(&self, component: u8) -> Option<&Pair> {
        self.selected.get(&component).map(|i| &self.pairs[*i])
    }

    /// The peer's credentials and candidates (from its SDP), and our role in the call: the
    /// check list is formed and checks start now.
    pub fn set_remote(&mut self, remote: IceDescription, role: Role, now: Instant) {
        self.role = role;
        for c in &remote.candidates {
            self.add_remote(c.clone());
        }
        self.remote = Some(remote);
        self.next_check = Some(now);
    }

    /// Every remote address checks go to (a TURN client needs a permission for each).
    pub fn remote_addresses(&self) -> Vec<SocketAddr> {
        self.remote_candidates.iter().map(|c| c.address).collect()
    }

    fn add_remote(&mut self, c: Candidate) -> usize {
        if let Some(i) = self
            .remote_candidates
            .iter()
            .position(|r| r.address == c.address)
        {
            // §7.3.1.3: a peer-reflexive candidate the peer's SDP then names is the signalled one.
            let learnt = self.remote_candidates[i].kind == CandidateKind::PeerReflexive;
            if learnt && c.kind != CandidateKind::PeerReflexive {
                self.remote_candidates[i] = c.clone();
                for p in self
                    .pairs
                    .iter_mut()
                    .filter(|p| p.remote.address == c.address)
                {
                    p.remote = c.clone();
                }
                for j in 0..self.pairs.len() {
                    self.pairs[j].priority =
                        self.priority_of(&self.pairs[j].local, &self.pairs[j].remote);
                }
            }
            return i;
        }
        // Pairs with every local candidate checks leave from: host and relayed. A server-reflexive
        // candidate's base is the host socket, so its pairs would repeat the host's (§6.1.2.4).
        let locals: Vec<Candidate> = self
            .local
            .candidates
            .iter()
            .filter(|l| matches!(l.kind, CandidateKind::Host | CandidateKind::Relayed))
            .filter(|l| l.address.is_ipv4() == c.address.is_ipv4() && l.component == c.component)
            .cloned()
            .collect();
        for l in locals {
            self.add_pair(l, c.clone(), PairState::Waiting);
        }
        self.remote_candidates.push(c);
        self.remote_candidates.len() - 1
    }

    fn add_pair(&mut self, local: Candidate, remote: Candidate, state: PairState) -> usize {
        if let Some(i) = self.find_pair(&local, remote.address) {
            return i;
        }
        let priority = self.priority_of(&local, &remote);
        self.pairs.push(Pair {
            local,
            remote,
            priority,
            state,
            valid: false,
            nominated: false,
            remote_nominated: false,
        });
        self.pairs.len() - 1
    }

    fn find_pair(&self, local: &Candidate, remote: SocketAddr) -> Option<usize> {
        self.pairs.iter().position(|p| {
            p.local.address == local.address
                && p.local.base == local.base
                && p.remote.address == remote
        })
    }

    fn priority_of(&self, local: &Candidate, remote: &Candidate) -> u64 {
        match self.role {
            Role::Controlling => pair_priority(local.priority, remote.priority),
            Role::Controlled => pair_priority(remote.priority, local.priority),
        }
    }

    fn switch_role(&mut self, role: Role) {
        self.role = role;
        for i in 0..self.pairs.len() {
            self.pairs[i].priority = self.priority_of(&self.pairs[i].local, &self.pairs[i].remote);
        }
        self.events.push_back(IceEvent::RoleChanged(role));
    }

    /// A STUN message that arrived at `base` (the host socket, or the relayed address when it
    /// came through the TURN allocation) from `from`. Returns whether it was ICE's: a request
    /// for our credentials or the answer to one of our checks.
    pub fn handle_stun(
        &mut self,
        base: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let Ok(msg) = Message::decode(bytes) else {
            return false;
        };
        if msg.method != Method::BINDING {
            return false;
        }
        match msg.class {
            Class::Request => self.on_request(&msg, (base, from), now),
            Class::SuccessResponse | Class::ErrorResponse => {
                self.on_response(&msg, (base, from), now)
            }
            Class::Indication => false,
        }
    }

    fn respond(&mut self, base: SocketAddr, to: SocketAddr, msg: Message, key: Option<&[u8]>) {
        if let Ok(payload) = msg.encode(key, true) {
            self.transmits.push_back(Transmit {
                source: base,
                destination: to,
                payload,
            });
        }
    }

    /// A check from the peer, arriving at `base` from `from`.
    fn on_request(&mut self, msg: &Message, (base, from): Path, now: Instant) -> bool {
        let ours = msg
            .username()
            .is_some_and(|u| u.split(':').next() == Some(self.local.ufrag.as_str()));
        if !ours {
            return false;
        }
        // RFC 8489 §9.1.3: a request that fails the short-term check gets 401, unauthenticated.
        if msg.verify_integrity(self.local.pwd.as_bytes()).is_err() {
            let reply = msg.reply(Class::ErrorResponse).with(Attribute::ErrorCode {
                code: 401,
                reason: "Unauthenticated".into(),
            });
            self.respond(base, from, reply, None);
            return true;
        }
        // RFC 8445 §7.3.1.1: a role conflict is settled by the larger tie-breaker. Before the
        // peer's SDP arrives our role is not settled yet (the offer/answer decides it), so a
        // check that early is answered without a verdict on roles.
        let role = self.remote.as_ref().map(|_| self.role);
        // `Some(true)`: we keep our role and the peer must change (487); `Some(false)`: we change.
        let we_win = match (role, msg.ice_controlling(), msg.ice_controlled()) {
            (Some(Role::Controlling), Some(theirs), _) => Some(self.tie_breaker >= theirs),
            (Some(Role::Controlled), _, Some(theirs)) => Some(self.tie_breaker < theirs),
            _ => None,
        };
        match we_win {
            Some(true) => {
                let reply = msg.reply(Class::ErrorResponse).with(Attribute::ErrorCode {
                    code: 487,
                    reason: "Role Conflict".into(),
                });
                let key = self.local.pwd.clone();
                self.respond(base, from, reply, Some(key.as_bytes()));
                return true;
            }
            Some(false) => self.switch_role(match self.role {
                Role::Controlling => Role::Controlled,
                Role::Controlled => Role::Controlling,
            }),
            None => {}
        }
        let reply = msg
            .reply(Class::SuccessResponse)
            .with(Attribute::XorMappedAddress(from));
        let key = self.local.pwd.clone();
        self.respond(base, from, reply, Some(key.as_bytes()));
        let Some(local) = self
            .local
            .candidates
            .iter()
            .find(|c| {
                c.base == base && matches!(c.kind, CandidateKind::Host | CandidateKind::Relayed)
            })
            .cloned()
        else {
            return true;
        };
        // §7.3.1.3: a source we do not know is a peer-reflexive remote candidate, of the
        // component of the candidate the request arrived at.
        let known = self.remote_candidates.iter().any(|c| c.address == from);
        if !known {
            let prio = msg.ice_priority().unwrap_or(0);
            let mut c = Candidate::peer_reflexive(from, from, prio);
            c.component = local.component;
            self.add_remote(c);
        }
        let remote = self
            .remote_candidates
            .iter()
            .find(|c| c.address == from)
            .cloned()
            .expect("added above");
        let i = self.add_pair(local, remote, PairState::Waiting);
        let nominated = msg.use_candidate() && self.role == Role::Controlled;
        if nominated {
            self.pairs[i].remote_nominated = true;
        }
        match self.pairs[i].state {
            // §7.3.1.4: a triggered check, ahead of the ordinary ones.
            PairState::Waiting | PairState::Failed => {
                self.pairs[i].state = PairState::Waiting;
                if !self.triggered.iter().any(|(t, _)| *t == i) {
                    self.triggered.push_back((i, false));
                }
                self.next_check.get_or_insert(now);
            }
            PairState::InProgress => {}
            PairState::Succeeded => {
                if nominated {
                    if let Some(v) = self.valid_for(base, from) {
                        self.pairs[v].nominated = true;
                        self.select(v, now);
                    }
                }
            }
        }
        true
    }

    /// The valid pair whose local base is `base` and whose remote is `remote`.
    fn valid_for(&self, base: SocketAddr, remote: SocketAddr) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.valid && p.local.base == base && p.remote.address == remote)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }

    /// The answer to one of our checks, arriving at `base` from `from`.
    fn on_response(&mut self, msg: &Message, (base, from): Path, now: Instant) -> bool {
        let Some(check) = self.checks.remove(&msg.transaction_id) else {
            return false;
        };
        let key = self
            .remote
            .as_ref()
            .map(|r| r.pwd.clone())
            .unwrap_or_default();
        if msg.verify_integrity(key.as_bytes()).is_err() {
            // Not from the peer we share the password with: keep waiting for the real answer.
            self.checks.insert(msg.transaction_id, check);
            return true;
        }
        let i = check.pair;
        // §7.2.5.2.1: the answer must come back on the path the request took.
        if from != check.destination || base != check.source {
            if !check.consent {
                self.pairs[i].state = PairState::Failed;
            }
            return true;
        }
        if msg.class == Class::ErrorResponse {
            if msg.error_code().map(|(c, _)| c) == Some(487) && !check.consent {
                let other = match self.role {
                    Role::Controlling => Role::Controlled,
                    Role::Controlled => Role::Controlling,
                };
                self.switch_role(other);
                self.pairs[i].state = PairState::Waiting;
                self.triggered.push_back((i, false));
                self.next_check.get_or_insert(now);
            } else if !check.consent {
                self.pairs[i].state = PairState::Failed;
            }
            return true;
        }
        if check.consent {
            if let Some(c) = &mut self.consent {
                c.last_answer = now;
            }
            return true;
        }
        let Some(mapped) = msg.xor_mapped_address() else {
            self.pairs[i].state = PairState::Failed;
            return true;
        };
        self.pairs[i].state = PairState::Succeeded;
        // §7.2.5.3.1: the mapped address names the local candidate of the valid pair: one we
        // gathered, or a new peer-reflexive one.
        let local = match self
            .local
            .candidates
            .iter()
            .find(|c| c.address == mapped && c.base == base)
        {
            Some(c) => c.clone(),
            None => {
                let c = Candidate::peer_reflexive(mapped, base, check.priority);
                self.local.candidates.push(c.clone());
                c
            }
        };
        let remote = self.pairs[i].remote.clone();
        let v = self.add_pair(local, remote, PairState::Succeeded);
        self.pairs[v].state = PairState::Succeeded;
        if !self.pairs[v].valid {
            self.pairs[v].valid = true;
            self.events.push_back(IceEvent::Valid {
                local: self.pairs[v].local.clone(),
                remote: self.pairs[v].remote.clone(),
            });
        }
        let component = self.pairs[v].local.component;
        self.first_valid.entry(component).or_insert(now);
        match self.role {
            Role::Controlling if check.nominate => {
                self.pairs[v].nominated = true;
                self.select(v, now);
            }
            Role::Controlled
                if self.pairs[i].remote_nominated || self.pairs[v].remote_nominated =>
            {
                self.pairs[v].nominated = true;
                self.select(v, now);
            }
            _ => {}
        }
        true
    }

    fn select(&mut self, v: usize, now: Instant) {
        let component = self.pairs[v].local.component;
        let better = self
            .selected
            .get(&component)
            .is_none_or(|s| *s != v && self.pairs[v].priority > self.pairs[*s].priority);
        if !better {
            return;
        }
        self.selected.insert(component, v);
        self.nominating.remove(&component);
        // Consent is kept on the RTP pair (RFC 7675 §5.1 asks it per stream, for what is sent).
        if component == 1 {
            self.consent = Some(Consent {
                next: now + self.consent_interval(),
                last_answer: now,
            });
        }
        self.events.push_back(IceEvent::Selected {
            local: self.pairs[v].local.clone(),
            remote: self.pairs[v].remote.clone(),
        });
    }

    /// RFC 7675 §5.1: the interval, randomised by ±20 % so agents do not synchronise.
    fn consent_interval(&mut self) -> Duration {
        let spread = (self.rng.next_u64() % 401) as u32;
        self.config.consent_interval * (800 + spread) / 1000
    }

    fn send_check(&mut self, i: usize, nominate: bool, consent: bool, now: Instant) {
        let Some(remote) = &self.remote else { return };
        let tid = TransactionId::from_draws(|| self.rng.next_u64());
        let p = &self.pairs[i];
        // §7.1.1: the priority a peer-reflexive candidate found by this check would have.
        let prio = priority(CandidateKind::PeerReflexive, 65535, p.local.component);
        let role = match self.role {
            Role::Controlling => {
                ice_attr(attr_type::ICE_CONTROLLING, &self.tie_breaker.to_be_bytes())
            }
            Role::Controlled => {
                ice_attr(attr_type::ICE_CONTROLLED, &self.tie_breaker.to_be_bytes())
            }
        };
        let mut msg = Message::new(Class::Request, Method::BINDING, tid)
            .with(Attribute::Username(format!(
                "{}:{}",
                remote.ufrag, self.local.ufrag
            )))
            .with(ice_attr(attr_type::PRIORITY, &prio.to_be_bytes()))
            .with(role);
        if nominate {
            msg = msg.with(ice_attr(attr_type::USE_CANDIDATE, &[]));
        }
        let Ok(payload) = msg.encode(Some(remote.pwd.as_bytes()), true) else {
            return;
        };
        let (source, destination) = (p.local.base, p.remote.address);
        self.transmits.push_back(Transmit {
            source,
            destination,
            payload: payload.clone(),
        });
        if !consent && !self.pairs[i].valid {
            self.pairs[i].state = PairState::InProgress;
        }
        self.checks.insert(
            tid,
            Check {
                pair: i,
                payload,
                source,
                destination,
                transmissions: 1,
                rto: self.config.rto,
                next: now + self.config.rto,
                nominate,
                consent,
                priority: prio,
            },
        );
    }

    /// The deadline from [`IceAgent::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.retransmit(now);
        if self.next_check.is_some_and(|t| t <= now) {
            self.next_check = None;
            let next = self.triggered.pop_front().or_else(|| {
                self.pairs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.state == PairState::Waiting)
                    .max_by_key(|(_, p)| p.priority)
                    .map(|(i, _)| (i, false))
            });
            if let Some((i, nominate)) = next {
                self.send_check(i, nominate, false, now);
                self.last_check = Some(now);
                self.next_check = Some(now + self.config.pacing);
            }
        }
        self.nominate(now);
        self.keep_consent(now);
        self.check_failed();
    }

    fn retransmit(&mut self, now: Instant) {
        let due: Vec<TransactionId> = self
            .checks
            .iter()
            .filter(|(_, c)| c.next <= now)
            .map(|(t, _)| *t)
            .collect();
        for tid in due {
            let Some(c) = self.checks.get_mut(&tid) else {
                continue;
            };
            if c.transmissions >= self.config.max_transmissions {
                let c = self.checks.remove(&tid).expect("just found");
                if !c.consent && !self.pairs[c.pair].valid {
                    self.pairs[c.pair].state = PairState::Failed;
                }
                if c.nominate {
                    let component = self.pairs[c.pair].local.component;
                    self.nominating.remove(&component);
                }
                continue;
            }
            c.transmissions += 1;
            c.rto *= 2;
            c.next = now + c.rto;
            self.transmits.push_back(Transmit {
                source: c.source,
                destination: c.destination,
                payload: c.payload.clone(),
            });
        }
    }

    /// Regular nomination (§8.1.1): once no better pair is still being checked, or once every
    /// pair has been checked and `nomination_wait` has passed since the last check left (pairs
    /// towards unreachable addresses would otherwise hold it for their whole retransmission
    /// schedule), the best valid pair is checked again with USE-CANDIDATE. Waiting for the whole
    /// list, not just for the first valid pair, makes the choice the same whichever answer comes
    /// first.
    fn nominate(&mut self, now: Instant) {
        if self.role != Role::Controlling {
            return;
        }
        let components: Vec<u8> = self.first_valid.keys().copied().collect();
        for component in components {
            if self.selected.contains_key(&component) || self.nominating.contains_key(&component) {
                continue;
            }
            let of = |p: &Pair| p.local.component == component;
            let Some((best, prio)) = self
                .pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.valid && of(p))
                .max_by_key(|(_, p)| p.priority)
                .map(|(i, p)| (i, p.priority))
            else {
                continue;
            };
            let pending_better = self.pairs.iter().any(|p| {
                of(p)
                    && !p.valid
                    && p.priority > prio
                    && matches!(p.state, PairState::Waiting | PairState::InProgress)
            });
            let all_sent = !self
                .pairs
                .iter()
                .any(|p| of(p) && p.state == PairState::Waiting);
            let quiet = self
                .last_check
                .is_some_and(|t| now >= t + self.config.nomination_wait);
            if !pending_better || (all_sent && quiet) {
                self.nominating.insert(component, best);
                self.triggered.push_front((best, true));
                // A nomination does not wait behind the pacing of ordinary checks.
                self.next_check = Some(now);
            }
        }
    }

    fn keep_consent(&mut self, now: Instant) {
        let (Some(s), Some(c)) = (self.selected.get(&1).copied(), self.consent) else {
            return;
        };
        if now >= c.last_answer + self.config.consent_timeout {
            self.consent = None;
            self.selected.clear();
            self.events.push_back(IceEvent::ConsentLost {
                local: self.pairs[s].local.clone(),
                remote: self.pairs[s].remote.clone(),
            });
            return;
        }
        if now >= c.next {
            let next = now + self.consent_interval();
            if let Some(c) = &mut self.consent {
                c.next = next;
            }
            self.send_check(s, false, true, now);
        }
    }

    fn check_failed(&mut self) {
        let over = self.remote.is_some()
            && !self.failed
            && !self.pairs.is_empty()
            && self.triggered.is_empty()
            && self.checks.is_empty()
            && self.pairs.iter().all(|p| p.state == PairState::Failed);
        if over {
            self.failed = true;
            self.events.push_back(IceEvent::Failed);
        }
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// When to call [`IceAgent::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let checks = self.checks.values().map(|c| c.next);
        let consent = self
            .consent
            .iter()
            .flat_map(|c| [c.next, c.last_answer + self.config.consent_timeout]);
        let nomination = self
            .first_valid
            .keys()
            .filter(|c| {
                self.role == Role::Controlling
                    && !self.selected.contains_key(c)
                    && !self.nominating.contains_key(c)
            })
            .filter_map(|_| self.last_check)
            .map(|t| t + self.config.nomination_wait)
            .filter(|t| self.next_check.is_none_or(|n| *t > n))
            .min();
        self.next_check
            .into_iter()
            .chain(checks)
            .chain(consent)
            .chain(nomination)
            .min()
    }
}

/// Where a STUN message arrived: (our base, the peer's address).
type Path = (SocketAddr, SocketAddr);

/// An ICE attribute the codec keeps raw (RFC 8445 §16.1).
fn ice_attr(typ: u16, value: &[u8]) -> Attribute {
    Attribute::Unknown {
        typ,
        value: value.to_vec(),
    }
}
