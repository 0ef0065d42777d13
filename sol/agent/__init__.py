"""sol.agent"""
